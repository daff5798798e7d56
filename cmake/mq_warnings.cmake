# mq_set_warnings(target): our warning flags, on our targets only (never third-party code).
function(mq_set_warnings target)
  # C++ sources only: nvcc (quant/*_cuda.cu) takes other flags.
  target_compile_options(${target} PRIVATE
                         $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow
                         -Wno-unused-parameter -Wno-missing-field-initializers>)
  if(MQ_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
  if(MQ_SANITIZE_ADDRESS)
    target_compile_options(${target} PRIVATE -fsanitize=address -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address)
  endif()
endfunction()

# mq_link_libstdcxx_first(target): list libstdc++ before LibTorch among the executable's
# needed libraries, so that its symbols win. Some LibTorch builds (the GPU machine's 2.11)
# export their own copies of std::filesystem functions, and binding to those crashed
# std::filesystem::remove_all there.
function(mq_link_libstdcxx_first target)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_SYSTEM_NAME STREQUAL "Linux")
    target_link_options(${target} BEFORE PRIVATE "LINKER:--push-state,--no-as-needed" -lstdc++
                        "LINKER:--pop-state")
  endif()
endfunction()

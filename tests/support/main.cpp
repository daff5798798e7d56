// tests/support/main.cpp: the Catch2 main of mq_tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// mobilequant/cli/main.cpp (placeholder until the CLI lands)
#include <iostream>
int main() { std::cout << "mobilequant\n"; return 0; }

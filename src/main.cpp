#include "src/cli.hpp"

int main(int argc, char** argv) {
  return fener::cli_main(argc, argv);
}

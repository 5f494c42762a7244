#include "src/cli.hpp"

namespace fener {
int cli_main(int, char**) { return 0; }
}  // namespace fener

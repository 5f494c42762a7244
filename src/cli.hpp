// Command line: fener check | run | --help | --version.
#pragma once

namespace fener {
int cli_main(int argc, char** argv);
}

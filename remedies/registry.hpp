// The table of remedy types: the `remedy:` names a rule's ladder may use.
#pragma once

#include <string>
#include <vector>

#include "remedies/remedy.hpp"

namespace fener {

struct RemedyType {
  std::string name;  // equals the file name in remedies/
  RemedyFactory make;
  std::string summary;  // one line for --help
};

const std::vector<RemedyType>& remedy_types();
const RemedyType* find_remedy_type(const std::string& name);
std::string remedy_names();  // "a, b, c" for messages

}  // namespace fener

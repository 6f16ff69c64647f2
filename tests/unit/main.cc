// tests/unit/main.cc: Catch2 v2 entry point for the unit tests of mm/ and fs/.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

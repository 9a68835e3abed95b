#include "intercept/cli.h"

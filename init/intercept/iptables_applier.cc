#include "intercept/applier.h"

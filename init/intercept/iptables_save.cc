#include "intercept/iptables_save.h"

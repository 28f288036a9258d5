/* placeholder until the module lands */
typedef int config_placeholder_t;

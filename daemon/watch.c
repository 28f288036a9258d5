/* placeholder until the module lands */
typedef int watch_placeholder_t;

/* placeholder until the module lands */
typedef int reaper_placeholder_t;

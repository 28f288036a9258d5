/* placeholder until the module lands */
typedef int match_placeholder_t;

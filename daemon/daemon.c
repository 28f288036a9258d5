typedef int daemon_placeholder_t;

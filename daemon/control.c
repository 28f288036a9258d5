/*
 * The daemon's side of the control socket, until the server lands: nothing
 * to start or stop.
 */
#include "daemon.h"

int daemon_start_server(struct daemon *d, const char *socket_override)
{
	(void)d;
	(void)socket_override;
	return 0;
}

void daemon_stop_server(struct daemon *d)
{
	(void)d;
}

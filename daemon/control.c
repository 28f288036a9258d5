/*
 * The daemon's side of the control socket: map the server's errors to the
 * daemon's exit statuses.
 */
#include <errno.h>

#include "daemon.h"
#include "server.h"

int daemon_start_server(struct daemon *d, const char *socket_override)
{
	int r = server_start(d, socket_override);

	if (r == -EADDRINUSE)
		return EXIT_RUNNING;
	return r < 0 ? 1 : 0;
}

void daemon_stop_server(struct daemon *d)
{
	server_destroy(d->server);
}

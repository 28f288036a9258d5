/*
 * The control server: owns the listening socket (bound here, or passed by
 * systemd as the fd named "control") and every client connection; frames
 * and parses varlink calls and dispatches them through the command table of
 * proto.h. Clients of another uid are closed at once. Loop thread only.
 */
#ifndef PYCACHED_SERVER_H
#define PYCACHED_SERVER_H

struct daemon;
struct server;

/* Past this many clients, each new one evicts the longest idle client
 * that has no call in the works (or is closed, when all have one). */
#define SERVER_MAX_CLIENTS 128
/* A client that makes no progress (half a request, an unread reply) goes. */
#define SERVER_STALL_MSEC 10000
#define SERVER_BACKLOG 64

/*
 * Resolve the socket path (socket_override is --socket, or NULL: see
 * paths_socket()), make sure no other daemon owns it, then take the
 * systemd-passed fd or bind the socket (directory 0700, socket 0600), and
 * listen on d->loop. Sets d->socket_path (owned by the daemon from then on)
 * and d->server. Logs its own one-line error and returns -EADDRINUSE when
 * another daemon runs (exit with EXIT_RUNNING), another -errno otherwise.
 * Nothing needs undoing on failure (in the one case where libuv refuses
 * the bound fd, handles are closing: running the loop frees them). The
 * caller must ignore SIGPIPE.
 */
int server_start(struct daemon *d, const char *socket_override);

/*
 * Stop listening, remove the socket if it was bound here, close every
 * client. Requests still waiting on the watcher are detached and freed when
 * their callback runs. Memory is freed in close callbacks: run the loop
 * until it has none left. Accepts NULL.
 */
void server_destroy(struct server *s);

#endif

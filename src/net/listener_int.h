/* listener_int.h — the HTTP server's listening socket, private to src/net/
 * (httpd.c is its one user; listener.c says why it exists).
 *
 * Threads: listener_open, listener_start, listener_close and listener_free
 * run on the thread that owns the server (main, or the simulator's starter);
 * the acceptor thread "http-accept" calls fn for every accepted connection,
 * one at a time, until listener_close. */
#ifndef TWIGATE_LISTENER_INT_H
#define TWIGATE_LISTENER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct listener listener;

/* An accepted connection: fn owns fd from here on (hands it to MHD or
 * closes it). Runs on the acceptor thread. */
typedef void (*listener_fn)(void *arg, int fd, const struct sockaddr *sa, socklen_t len);

/* Binds sa and listens (port 0 = any free port; an IPv6 address also takes
 * IPv4 clients). NULL with err set: why, in words an operator can act on. */
listener *listener_open(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen);
int       listener_port(const listener *l);
/* Starts the acceptor thread; -1 if it cannot be created. */
int       listener_start(listener *l, listener_fn fn, void *arg);
/* Stops accepting: from its return the kernel refuses new connections and
 * fn is no longer called. Idempotent; accepts NULL. */
void      listener_close(listener *l);
void      listener_free(listener *l);   /* closes first; accepts NULL */

#endif

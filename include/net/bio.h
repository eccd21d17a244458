/* bio — a background I/O thread (Redis's bio.c model): file work that may
 * take seconds (cutting a window out of a recording of up to 2 GiB,
 * deleting files), and parses too large for a loop (the reconciler's GET
 * /calls listing: ~2 MB for 10,000 calls), run here instead of on a loop
 * thread, where they would hold up every timer and every call.
 *
 * One named thread per bio, a mutex-protected FIFO capped at BIO_MAX_JOBS,
 * and a condition variable as the doorbell. Jobs run one at a time in
 * submission order, so two jobs on the same files never overlap. A job's
 * run function does the work and posts its own completion to whoever waits
 * (the engine: engine_submit), because only the submitter knows its loop.
 *
 * Threads: bio_submit from any thread; run and cancel on the bio thread
 * (cancel also on the thread calling bio_stop); create/stop/destroy from
 * one owner thread. Ownership: arg belongs to the bio from a true
 * bio_submit until run or cancel is called with it, which takes it. */
#ifndef TWIGATE_BIO_H
#define TWIGATE_BIO_H

#include <stdbool.h>
#include <stddef.h>

/* Queued jobs; past this bio_submit fails (backpressure: each job is a
 * whole-file operation, so a longer queue only hides an overloaded disk). */
#define BIO_MAX_JOBS 4096

typedef struct bio bio;
typedef void (*bio_fn)(void *arg);

/* Starts the thread (named thread_name, at most 15 characters). NULL on
 * failure, with a reason in err. */
bio *bio_create(const char *thread_name, char *err, size_t errlen);
/* Queues run(arg). cancel(arg) instead when the bio stops before the job
 * ran (it must release arg and answer whoever waits). false: the queue is
 * full, the bio is stopping or NULL; nothing was queued and the caller
 * keeps arg. */
__attribute__((warn_unused_result))
bool bio_submit(bio *b, bio_fn run, bio_fn cancel, void *arg);
/* Stops taking jobs, lets the running job finish, cancels the queued ones
 * and joins the thread. Idempotent; accepts NULL. */
void bio_stop(bio *b);
/* Stops (if needed) and frees. Accepts NULL. */
void bio_destroy(bio *b);
/* Jobs queued or running. Any thread. */
size_t bio_pending(bio *b);
/* True once bio_stop has begun. Any thread. */
bool bio_stopping(bio *b);
/* True on a bio thread: lets file-work helpers assert where they run. */
bool bio_on_thread(void);

#endif

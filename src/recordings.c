/* recordings.c — Recording resources (work in progress: placeholders so
 * that twigate links while the module is written). */
#include "engine_int.h"

void rec_call_answered(call *c)
{
    (void)c;
}

void rec_kaphila_event(engine *e, const char *account_sid, const char *call_sid,
                       const char *name, json_t *ev)
{
    (void)e; (void)account_sid; (void)call_sid; (void)name; (void)ev;
}

void call_record_window(call *c, const char *re_sid, int64_t start_ms, int64_t end_ms,
                        const char *rsc_url, const char *rsc_method, int rsc_events)
{
    (void)c; (void)re_sid; (void)start_ms; (void)end_ms; (void)rsc_url; (void)rsc_method;
    (void)rsc_events;
}

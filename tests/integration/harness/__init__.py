"""Test harness for twigate's integration tests (see ../README.md)."""
from .barriers import (engine_barrier, metric_value, outbox_drained, settle_call,
                       sim_ended)
from .daemon import (DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, Account, KaphilaSim,
                     Twigate, build_dir, make_accounts, render_config)
from .oas import (assert_matches_schema, find_operation, response_examples,
                  response_schema, schema_errors, to_json_schema)
from .receiver import Behaviour, Request, WebhookReceiver
from .util import (CALL_KEYS, CALL_SUBRESOURCES, LIST_META_KEYS, SID_RE,
                   assert_call_json, assert_list_envelope, ERROR_KEYS, assert_rfc2822, assert_twilio_error, free_port,
                   fresh_number, nanp_formatted, parse_rfc2822, utcnow, wait_for)

__all__ = [n for n in dir() if not n.startswith("_")]

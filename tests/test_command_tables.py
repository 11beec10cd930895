"""The sessions share one dispatch idiom (issue 9 §1): a module-level ``COMMANDS``
table, verb → (handler, frozenset of the states that allow it; IMAP's rows also say
whether an untagged EXPUNGE may precede the reply), each handler a ``_cmd_<verb>``
method of the session (a mixin's, for the split-out handlers)."""

import unittest

from protocols.imap import session as imap
from protocols.pop3 import server as pop3
from protocols.smtp import server as smtp


class CommandTableTest(unittest.TestCase):
    def check_table(self, table, session, state_enum, aliases=()):
        for verb, row in table.items():
            handler, states = (row.handler, row.states) if hasattr(row, "handler") else row
            name = (verb.decode("ascii") if isinstance(verb, bytes) else verb).lower()
            name = dict(aliases).get(name, name)
            self.assertEqual(handler.__name__, "_cmd_" + name, verb)
            self.assertIs(getattr(session, handler.__name__), handler, verb)
            self.assertIsInstance(states, frozenset, verb)
            self.assertTrue(states, verb)
            self.assertTrue(all(isinstance(s, state_enum) for s in states), verb)
        public = [n for n in dir(session) if n.startswith(("cmd_", "do_", "handle_"))]
        self.assertEqual(public, [], "handlers are _cmd_<verb>")

    def test_smtp_table(self):
        self.check_table(smtp.COMMANDS, smtp.SmtpSession, smtp.State)

    def test_pop3_table(self):
        self.check_table(pop3.COMMANDS, pop3.Pop3Session, pop3.Pop3State)

    def test_imap_table(self):
        # CHECK is NOOP's twin (RFC 3501 §6.4.1: "equivalent to NOOP" here: nothing to flush)
        self.check_table(imap.COMMANDS, imap.ImapSession, imap.ImapState, aliases=[("check", "noop")])


if __name__ == "__main__":
    unittest.main()

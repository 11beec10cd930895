"""The configuration (protocols/config.py) and mailsrv.py's table of listeners.

One table of keys gives the typed fields of Config; one table of listeners
gives the ports bound, their TLS mode, the --NAME-port flags and `check`'s plan.
"""

import dataclasses
import typing
import unittest

import mailsrv
from protocols import config as config_mod
from protocols.config import KEYS, Config, ConfigError

NAMES = (lambda: "mx.example.test", lambda: "mx")


class TypedConfigTest(unittest.TestCase):
    def test_every_key_is_a_typed_field_of_config(self):
        fields = {f.name: f.type for f in dataclasses.fields(Config)}
        self.assertEqual(list(fields), list(KEYS))
        for key, (kind, _d, _l, _c) in KEYS.items():
            if key != "trusted_networks":
                self.assertEqual(fields[key], config_mod.KIND_TYPES[kind], key)

    def test_values_are_converted_to_their_types(self):
        cfg = Config({"smtp_port": "0", "pop3_port": "off", "listen": "127.0.0.1, ::1",
                      "allow_plaintext_auth": "yes", "auth_failure_delay": "0.5", "max_recipients": "7"},
                     names=NAMES)
        self.assertEqual((cfg.smtp_port, cfg.pop3_port, cfg.submission_port), (0, None, 2587))
        self.assertEqual(cfg.listen, ["127.0.0.1", "::1"])
        self.assertIs(cfg.allow_plaintext_auth, True)
        self.assertEqual((cfg.auth_failure_delay, cfg.max_recipients), (0.5, 7))
        self.assertEqual(cfg.hostname, "mx.example.test")
        self.assertEqual(cfg.values["max_recipients"], 7)
        for key, (kind, _d, _l, _c) in KEYS.items():
            value = getattr(cfg, key)
            if kind in ("str", "int", "float", "bool", "list"):
                self.assertIsInstance(value, typing.get_origin(config_mod.KIND_TYPES[kind])
                                      or config_mod.KIND_TYPES[kind], key)

    def test_a_bad_or_unknown_key_is_one_line_naming_it(self):
        with self.assertRaisesRegex(ConfigError, "bad value for smtp_port: 'x'"):
            Config({"smtp_port": "x"}, names=NAMES)
        with self.assertRaisesRegex(ConfigError, "unknown configuration key: smtp_prot"):
            Config({"smtp_prot": "25"}, names=NAMES)

    def test_trusted_networks_as_text_and_parsed(self):
        cfg = Config({"trusted_networks": "10.0.0.0/8,::1"}, names=NAMES)
        self.assertEqual(cfg.trusted_networks, ["10.0.0.0/8", "::1"])
        self.assertEqual([str(n) for n in cfg.trusted_networks.networks()], ["10.0.0.0/8", "::1/128"])
        self.assertEqual(Config({"trusted_networks": "none"}, names=NAMES).trusted_networks.networks(), [])

    def test_the_relay_password_is_not_in_the_repr(self):
        cfg = Config({"relay_auth_user": "u", "relay_auth_password": "hunter2"}, names=NAMES)
        self.assertNotIn("hunter2", repr(cfg))
        self.assertIn("relay_auth_user='u'", repr(cfg))


class ListenerTableTest(unittest.TestCase):
    def test_every_port_key_has_one_listener_and_every_listener_a_port_key(self):
        port_keys = [k for k, (kind, _d, _l, _c) in KEYS.items() if kind == "port"]
        self.assertEqual(sorted(lst.port_key for lst in mailsrv.LISTENERS), sorted(port_keys))
        self.assertEqual(len({lst.name for lst in mailsrv.LISTENERS}), len(mailsrv.LISTENERS))
        for lst in mailsrv.LISTENERS:
            self.assertIn(lst.tls, (mailsrv.STARTTLS, mailsrv.IMPLICIT, mailsrv.PLAIN), lst.name)
            self.assertTrue(lst.factory is None or lst.busy.endswith(b"\r\n"), lst.name)

    def test_each_listener_has_its_port_flag(self):
        for lst in mailsrv.LISTENERS:
            flag = "--" + lst.port_key.replace("_", "-")
            args = mailsrv._admin_parser().parse_args([flag, "0"])
            self.assertEqual(getattr(config_mod.load_config(args), lst.port_key), 0, flag)

    def test_check_plans_the_listeners_of_the_table(self):
        from protocols.startup import planned_listeners
        cfg = Config({"smtp_port": "25", "submission_port": "off", "tls_self_signed": "no"}, names=NAMES)
        lines = planned_listeners(cfg, mailsrv.LISTENERS)
        off = "off (needs tls_cert and tls_key, or tls_self_signed)"
        self.assertEqual(lines, ["listen smtp 127.0.0.1:25", f"smtps: {off}",
                                 "listen pop3 127.0.0.1:2110", f"pop3s: {off}",
                                 "listen imap 127.0.0.1:2143", f"imaps: {off}"])
        # by default a self-signed certificate is made at start: the implicit-TLS listeners open
        cfg = Config({"smtp_port": "25", "submission_port": "off"}, names=NAMES)
        self.assertIn("listen smtps 127.0.0.1:2465", planned_listeners(cfg, mailsrv.LISTENERS))


if __name__ == "__main__":
    unittest.main()

"""protocols/backend/policy.py: trusted_networks answered once per client
address (issue 14: no per-message address parsing), forgotten on SIGHUP's
configure, bounded against a spray of source addresses."""

import types
import unittest

from protocols.backend import policy
from protocols.config import CidrList


def config(nets):
    return types.SimpleNamespace(trusted_networks=CidrList(nets))


class TrustedPeerTest(unittest.TestCase):
    def setUp(self):
        self.p = policy.PolicyService(config(["127.0.0.0/8", "2001:db8::/32"]), None, None,
                                      lambda: None, lambda: True)

    def test_answers(self):
        self.assertTrue(self.p.trusted_client("127.0.0.5"))
        self.assertTrue(self.p.trusted_client("::ffff:127.0.0.9"))      # IPv4-mapped
        self.assertTrue(self.p.trusted_client("2001:db8::1%eth0"))       # zone id dropped
        self.assertFalse(self.p.trusted_client("192.0.2.1"))
        self.assertFalse(self.p.trusted_client("not an address"))
        self.assertFalse(self.p.trusted_client(""))

    def test_remembered_until_configure(self):
        self.assertFalse(self.p.trusted_client("192.0.2.1"))
        self.assertIn("192.0.2.1", self.p._trusted_seen)
        self.p.configure(config(["192.0.2.0/24"]), None)       # SIGHUP with new networks
        self.assertTrue(self.p.trusted_client("192.0.2.1"))
        self.assertFalse(self.p.trusted_client("127.0.0.5"))

    def test_memory_is_bounded_under_a_spray_of_addresses(self):
        for i in range(policy.TRUSTED_SEEN_MAX * 2 + 7):
            self.p.trusted_client("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255))
        self.assertLessEqual(len(self.p._trusted_seen), policy.TRUSTED_SEEN_MAX)
        self.assertTrue(self.p.trusted_client("127.0.0.1"))


if __name__ == "__main__":
    unittest.main()

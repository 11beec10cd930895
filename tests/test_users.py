"""store/users.py: UserDB, AliasDB, Directory, address normalisation."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import tempfile
import unittest

from store.maildir import MailStore
from store.users import (AliasDB, Directory, MAX_ALIAS_DEPTH, UserDB, normalize_address,
                         normalize_domain, scram_keys)
from store.usershow import show_user
from tests.helpers import cheap_scrypt


class _TmpDir(unittest.TestCase):
    cheap_hashing = True      # UserDBTest tests the hashing itself, with the product's parameters

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mailsrv-users-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        if self.cheap_hashing:
            cheap = cheap_scrypt()
            cheap.__enter__()
            self.addCleanup(cheap.__exit__, None, None, None)


class NormalizeTest(unittest.TestCase):
    def test_lowercases_and_strips(self):
        self.assertEqual(normalize_address("  Alice@Example.ORG "), "alice@example.org")

    def test_rejects_malformed(self):
        for bad in ["alice", "a@b@c", "@example.org", "alice@", "al ice@example.org",
                    "alice@exa mple.org", "al\x01ice@example.org", "al\x7fice@example.org",
                    "a/b@example.org", ".alice@example.org", "a\x00b@example.org",
                    "alice@example.org.", "alice@.example.org", "alice@a..b",
                    "alice@[127.0.0.1]", "user%remote@example.org", "remote!user@example.org",
                    '"user@remote"@example.org', "x" * 65 + "@example.org",
                    "alice@" + "a" * 64 + ".org"]:
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, normalize_address, bad)

    def test_local_part_limit_is_64_octets(self):
        # RFC 5321 §4.5.3.1.1
        self.assertEqual(normalize_address("x" * 64 + "@example.org"), "x" * 64 + "@example.org")

    def test_idn_a_label_becomes_lowercase_u_label(self):
        self.assertEqual(normalize_domain("XN--BCHER-KVA.Example"), "bücher.example")
        self.assertEqual(normalize_domain("Bücher.example"), "bücher.example")

    def test_invalid_a_label_rejected(self):
        self.assertRaises(ValueError, normalize_domain, "xn--zzzz-!!.example")


class UserDBTest(_TmpDir):
    cheap_hashing = False
    def test_add_verify_and_wrong_password(self):
        db = UserDB(self.dir)
        db.add("Alice@Example.org", "s3cret")
        self.assertTrue(db.verify_password("alice@example.org", "s3cret"))
        self.assertTrue(db.verify_password("ALICE@EXAMPLE.ORG", "s3cret"))
        self.assertFalse(db.verify_password("alice@example.org", "S3cret"))
        self.assertFalse(db.verify_password("nobody@example.org", "s3cret"))
        self.assertFalse(db.verify_password("not an address", "s3cret"))

    def test_unknown_user_still_costs_one_scrypt(self):
        # no timing oracle for user existence: both paths run scrypt once
        import store.passwords as users_mod
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        users_mod.dummy_hash()          # made once per process, on first use
        calls = []
        real = users_mod.hashlib.scrypt

        def counting(*args, **kw):
            calls.append(kw.get("n"))
            return real(*args, **kw)
        users_mod.hashlib.scrypt = counting
        try:
            db.verify_password("alice@example.org", "wrong")
            db.verify_password("nobody@example.org", "wrong")
            db.verify_password("@@invalid", "wrong")
        finally:
            users_mod.hashlib.scrypt = real
        self.assertEqual(calls, [2 ** 14] * 3)

    def test_scrypt_parameters_stored_with_hash(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        with open(os.path.join(self.dir, "users")) as fh:
            rec = json.loads(fh.readline())
        kind, n, r, p, salt, key = rec["scrypt"].split("$")
        self.assertEqual((kind, n, r, p), ("scrypt", "16384", "8", "1"))
        self.assertEqual(len(base64.b64decode(salt)), 16)
        self.assertEqual(len(base64.b64decode(key)), 64)
        # a hash made with other parameters still verifies (they are read back)
        salt_b = os.urandom(16)
        other = hashlib.scrypt(b"pw", salt=salt_b, n=2 ** 10, r=8, p=1, dklen=32)
        rec["scrypt"] = "scrypt$1024$8$1$%s$%s" % (base64.b64encode(salt_b).decode(),
                                                   base64.b64encode(other).decode())
        with open(os.path.join(self.dir, "users"), "w") as fh:
            fh.write(json.dumps(rec) + "\n")
        db.reload_if_changed()
        self.assertTrue(db.verify_password("alice@example.org", "pw"))
        self.assertFalse(db.verify_password("alice@example.org", "px"))

    def test_duplicate_add_rejected(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw1")
        with self.assertRaises(ValueError):
            db.add("ALICE@example.org", "pw2")
        self.assertTrue(db.verify_password("alice@example.org", "pw1"))

    def test_empty_password_rejected(self):
        self.assertRaises(ValueError, UserDB(self.dir).add, "a@example.org", "")

    def test_delete_list_exists(self):
        db = UserDB(self.dir)
        db.add("bob@example.org", "pw")
        db.add("alice@example.org", "pw")
        self.assertEqual(db.list(), ["alice@example.org", "bob@example.org"])
        db.delete("Bob@example.org")
        self.assertEqual(db.list(), ["alice@example.org"])
        self.assertFalse(db.exists("bob@example.org"))
        self.assertTrue(db.exists("alice@EXAMPLE.org"))
        self.assertRaises(ValueError, db.delete, "bob@example.org")
        self.assertEqual(UserDB(self.dir).list(), ["alice@example.org"])

    def test_set_password(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "old")
        old_scram = db.scram_credentials("alice@example.org")
        db.set_password("alice@example.org", "new")
        self.assertFalse(db.verify_password("alice@example.org", "old"))
        self.assertTrue(db.verify_password("alice@example.org", "new"))
        self.assertNotEqual(db.scram_credentials("alice@example.org"), old_scram)
        self.assertRaises(ValueError, db.set_password, "x@example.org", "pw")

    def test_file_mode_0600_and_no_password_in_file(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "hunter2-secret")
        path = os.path.join(self.dir, "users")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path, "rb") as fh:
            self.assertNotIn(b"hunter2-secret", fh.read())

    def test_rewrite_is_atomic_and_leaves_no_tmp_files(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        inode = os.stat(os.path.join(self.dir, "users")).st_ino
        db.add("bob@example.org", "pw")
        # a new inode: the file was replaced (os.replace), not rewritten in place
        self.assertNotEqual(os.stat(os.path.join(self.dir, "users")).st_ino, inode)
        self.assertEqual(sorted(os.listdir(self.dir)), ["users", "users.lock"])

    def test_stale_tmp_from_a_crash_is_replaced(self):
        with open(os.path.join(self.dir, "users.tmp"), "w") as fh:
            fh.write("garbage from a crashed writer")
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        self.assertEqual(sorted(os.listdir(self.dir)), ["users", "users.lock"])
        self.assertEqual(UserDB(self.dir).list(), ["alice@example.org"])

    def test_failed_write_cleans_tmp_and_keeps_old_file(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        with open(os.path.join(self.dir, "users"), "rb") as fh:
            before = fh.read()
        real_replace = os.replace

        def boom(src, dst):
            raise OSError(28, "No space left on device")
        os.replace = boom
        try:
            with self.assertRaises(OSError):
                db.add("bob@example.org", "pw")
        finally:
            os.replace = real_replace
        with open(os.path.join(self.dir, "users"), "rb") as fh:
            self.assertEqual(fh.read(), before)
        self.assertEqual(sorted(os.listdir(self.dir)), ["users", "users.lock"])

    def test_reload_if_changed_sees_other_instance(self):
        server = UserDB(self.dir)
        cli = UserDB(self.dir)
        self.assertFalse(server.reload_if_changed())
        cli.add("carol@example.org", "pw")
        self.assertFalse(server.exists("carol@example.org"))
        self.assertTrue(server.reload_if_changed())
        self.assertTrue(server.exists("carol@example.org"))
        self.assertFalse(server.reload_if_changed())

    def test_concurrent_instances_do_not_lose_updates(self):
        a, b = UserDB(self.dir), UserDB(self.dir)
        a.add("one@example.org", "pw")
        b.add("two@example.org", "pw")   # b re-reads under the lock before writing
        self.assertEqual(UserDB(self.dir).list(), ["one@example.org", "two@example.org"])

    def test_domains(self):
        db = UserDB(self.dir)
        db.add("a@One.example", "pw")
        db.add("b@xn--bcher-kva.example", "pw")
        self.assertEqual(db.domains(), {"one.example", "bücher.example"})

    def test_scram_keys_match_rfc5802_formulas(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pencil")
        creds = db.scram_credentials("Alice@example.org")
        self.assertEqual(creds.iterations, 4096)
        self.assertEqual(len(creds.salt), 16)
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", creds.salt, 4096)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        self.assertEqual(creds.stored_key, hashlib.sha256(client_key).digest())
        self.assertEqual(creds.server_key,
                         hmac.new(salted, b"Server Key", hashlib.sha256).digest())
        self.assertIsNone(db.scram_credentials("nobody@example.org"))

    def test_scram_keys_rfc7677_vector(self):
        # RFC 7677 §3 example: user "user", password "pencil", i=4096.
        import base64
        salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        keys = scram_keys("pencil", salt, 4096)
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
        self.assertEqual(keys.server_key, hmac.new(salted, b"Server Key", hashlib.sha256).digest())
        # the server signature of the RFC's exchange proves ServerKey is right
        auth = (b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        sig = hmac.new(keys.server_key, auth, hashlib.sha256).digest()
        self.assertEqual(base64.b64encode(sig), b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")

    def test_scram_login_through_protocols_sasl(self):
        try:
            from protocols import sasl
        except ImportError:  # pragma: no cover - other helper's module
            self.skipTest("protocols/sasl.py not available")
        db = UserDB(self.dir)
        db.add("alice@example.org", "pässword")
        k = db.scram_credentials("alice@example.org")
        server = sasl.SaslServer("SCRAM-SHA-256", lambda name: sasl.ScramCredentials(
            k.salt, k.iterations, k.stored_key, k.server_key))
        client = sasl.ScramClient("alice@example.org", "pässword")
        challenge, _ = server.step(client.first())
        final, outcome = server.step(client.final(challenge))
        self.assertIsNone(outcome)
        self.assertTrue(client.verify(final))

    def test_non_ascii_password_normalised_nfkc(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "\u2168")          # ROMAN NUMERAL NINE
        self.assertTrue(db.verify_password("alice@example.org", "IX"))  # NFKC form


class AliasDBTest(_TmpDir):
    def test_add_list_delete_reload(self):
        a = AliasDB(self.dir)
        a.add("Sales@Example.org", ["bob@example.org", "Carol@Example.org", "bob@example.org"])
        self.assertEqual(a.list(), {"sales@example.org": ["bob@example.org", "carol@example.org"]})
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, "aliases")).st_mode), 0o600)
        other = AliasDB(self.dir)
        a.delete("sales@example.org")
        self.assertTrue(other.reload_if_changed())
        self.assertEqual(other.list(), {})
        self.assertRaises(ValueError, a.delete, "sales@example.org")
        self.assertRaises(ValueError, a.add, "x@example.org", [])
        self.assertRaises(ValueError, a.add, "x@example.org", ["not-an-address"])


class DirectoryTest(_TmpDir):
    def setUp(self):
        super().setUp()
        self.users = UserDB(self.dir)
        self.aliases = AliasDB(self.dir)
        for u in ["alice@example.org", "bob@example.org", "carl@other.example",
                  "dora@bücher.example"]:
            self.users.add(u, "pw")
        self.dirx = Directory(self.users, self.aliases, ["Example.org", "empty.example"],
                              "alice@example.org")

    def test_exact_user_case_insensitive(self):
        self.assertEqual(self.dirx.resolve("Alice", "EXAMPLE.ORG"), ["alice@example.org"])

    def test_unknown_is_none(self):
        self.assertIsNone(self.dirx.resolve("nobody", "example.org"))
        self.assertIsNone(self.dirx.resolve("alice", "remote.example"))
        self.assertIsNone(self.dirx.resolve("", "example.org"))

    def test_plus_addressing(self):
        self.assertEqual(self.dirx.resolve("bob+lists", "example.org"), ["bob@example.org"])
        self.assertIsNone(self.dirx.resolve("+tag", "example.org"))
        self.users.add("bob+x@example.org", "pw")    # an exact user wins
        self.assertEqual(self.dirx.resolve("bob+x", "example.org"), ["bob+x@example.org"])

    def test_alias_multi_target_recursive_with_remote_and_dedupe(self):
        self.aliases.add("team@example.org", ["alice@example.org", "staff@example.org",
                                              "Friend@Remote.example"])
        self.aliases.add("staff@example.org", ["bob@example.org", "alice@example.org"])
        self.assertEqual(self.dirx.resolve("team", "example.org"),
                         ["alice@example.org", "bob@example.org", "friend@remote.example"])
        self.assertEqual(self.dirx.resolve("team+tag", "example.org"),
                         ["alice@example.org", "bob@example.org", "friend@remote.example"])

    def test_alias_loop_is_safe(self):
        self.aliases.add("a@example.org", ["b@example.org"])
        self.aliases.add("b@example.org", ["a@example.org"])
        self.assertIsNone(self.dirx.resolve("a", "example.org"))
        self.aliases.add("b@example.org", ["a@example.org", "bob@example.org"])
        self.assertEqual(self.dirx.resolve("a", "example.org"), ["bob@example.org"])

    def test_alias_depth_is_bounded(self):
        n = MAX_ALIAS_DEPTH + 5
        for i in range(n):
            self.aliases.add("l%d@example.org" % i, ["l%d@example.org" % (i + 1)])
        self.aliases.add("l%d@example.org" % n, ["bob@example.org"])
        self.assertIsNone(self.dirx.resolve("l0", "example.org"))
        self.assertEqual(self.dirx.resolve("l%d" % (n - 3), "example.org"), ["bob@example.org"])

    def test_alias_domain_is_local(self):
        self.aliases.add("info@alias-only.example", ["bob@example.org"])
        self.assertTrue(self.dirx.is_local_domain("ALIAS-ONLY.example"))
        self.assertEqual(self.dirx.resolve("info", "alias-only.example"), ["bob@example.org"])

    def test_catch_all(self):
        self.aliases.add("*@other.example", ["carl@other.example"])
        self.assertEqual(self.dirx.resolve("anything", "other.example"), ["carl@other.example"])
        self.assertIsNone(self.dirx.resolve("anything", "example.org"))

    def test_postmaster_any_local_domain(self):
        # RFC 5321 §4.5.1
        for dom in ["example.org", "other.example", "empty.example", "bücher.example"]:
            with self.subTest(dom=dom):
                self.assertEqual(self.dirx.resolve("PostMaster", dom), ["alice@example.org"])
        self.assertIsNone(self.dirx.resolve("postmaster", "remote.example"))

    def test_postmaster_unset_goes_to_first_user_of_domain(self):
        d = Directory(self.users, self.aliases, ["example.org", "empty.example"], None)
        self.assertEqual(d.resolve("postmaster", "other.example"), ["carl@other.example"])
        self.assertEqual(d.resolve("postmaster", "example.org"), ["alice@example.org"])
        self.assertEqual(d.resolve("postmaster", "empty.example"), ["alice@example.org"])
        empty = Directory(UserDB(os.path.join(self.dir, "none")), self.aliases,
                          ["lonely.example"], "")
        self.assertEqual(empty.resolve("postmaster", "lonely.example"),
                         ["postmaster@lonely.example"])

    def test_postmaster_always_accepted_even_if_target_unknown(self):
        d = Directory(self.users, self.aliases, ["example.org"], "pm@example.org")
        self.assertEqual(d.resolve("postmaster", "example.org"), ["pm@example.org"])
        self.aliases.add("pm@example.org", ["bob@example.org", "admin@remote.example"])
        self.assertEqual(d.resolve("postmaster", "other.example"),
                         ["bob@example.org", "admin@remote.example"])
        self.assertIsNone(d.resolve("pm2", "example.org"))

    def test_is_local_domain(self):
        self.assertTrue(self.dirx.is_local_domain("EXAMPLE.org"))
        self.assertTrue(self.dirx.is_local_domain("empty.example"))
        self.assertTrue(self.dirx.is_local_domain("other.example"))   # a user's domain
        self.assertFalse(self.dirx.is_local_domain("example.org."))
        self.assertFalse(self.dirx.is_local_domain("remote.example"))
        self.assertFalse(self.dirx.is_local_domain("sub.example.org"))
        self.assertFalse(self.dirx.is_local_domain(""))

    def test_idn_a_label_and_u_label(self):
        self.assertTrue(self.dirx.is_local_domain("xn--bcher-kva.example"))
        self.assertEqual(self.dirx.resolve("dora", "XN--BCHER-KVA.example"),
                         ["dora@bücher.example"])
        self.assertEqual(self.dirx.resolve("Dora", "BÜCHER.example"), ["dora@bücher.example"])

    def test_open_relay_tricks(self):
        for local, dom in [("bob%remote.example", "example.org"),
                           ("user@remote.example", "example.org"),   # "user@remote"@example.org
                           ("remote.example!bob", "example.org"),
                           ("bob", "example.org."),
                           ("bob", "[127.0.0.1]"),
                           ("bob@example.org", "example.org"),
                           ("bob\r\nRCPT", "example.org")]:
            with self.subTest(local=local, dom=dom):
                self.assertIsNone(self.dirx.resolve(local, dom))

    def test_sees_changes_after_reload(self):
        other = UserDB(self.dir)
        other.add("eve@example.org", "pw")
        self.assertIsNone(self.dirx.resolve("eve", "example.org"))
        self.users.reload_if_changed()
        self.assertEqual(self.dirx.resolve("eve", "example.org"), ["eve@example.org"])


class BadLineTest(_TmpDir):
    """Issue 7 item 4: one bad line is skipped with one warning naming the file
    and line; everything else keeps working."""

    def _users_with(self, *bad: bytes) -> str:
        UserDB(self.dir).add("alice@example.org", "pw")
        path = os.path.join(self.dir, "users")
        with open(path, "ab") as fh:
            fh.write(b"".join(line + b"\n" for line in bad))
        return path

    def test_each_bad_user_line_is_skipped_with_file_and_line(self):
        bad = [b'{"address": "b\xffob@example.org", "scrypt": "x"}', b'{"address": "bob"}',
               b'{"address": 5}', b'not json', b'["a list"]', b'{"address": "c@example.org", "scrypt": 7}',
               b'{"address": "d@example.org", "scrypt": "x", "scram": {"salt": "!!"}}',
               b'{"address": "e@example.org", "scrypt": "x", "disabled": "yes"}']
        path = self._users_with(*bad)
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            db = UserDB(self.dir)
        self.assertEqual(len(logs.records), len(bad))
        for n, record in enumerate(logs.records, 2):
            self.assertIn("%s:%d: " % (path, n), record.getMessage())
        self.assertIn("not UTF-8", logs.records[0].getMessage())
        self.assertEqual(db.problems, [r.getMessage() for r in logs.records])
        # the good entry works, the bad ones are not there, and nothing raises
        self.assertEqual(db.list(), ["alice@example.org"])
        self.assertEqual(db.domains(), {"example.org"})
        self.assertTrue(db.verify_password("alice@example.org", "pw"))
        for who in ("bob", "c@example.org", "d@example.org", "e@example.org"):
            self.assertFalse(db.verify_password(who, "x"))
            self.assertIsNone(db.scram_credentials(who))

    def test_warned_once_per_change_not_per_lookup_and_kept_on_rewrite(self):
        self._users_with(b'{"address": 5}')
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            db = UserDB(self.dir)
            for _ in range(5):
                db.reload_if_changed()
                db.exists("alice@example.org")
            db.add("bob@example.org", "pw")          # re-reads under the lock: no second warning
            db.reload_if_changed()
        self.assertEqual(len(logs.records), 1, [r.getMessage() for r in logs.records])
        with open(os.path.join(self.dir, "users"), "rb") as fh:
            self.assertIn(b'{"address": 5}\n', fh.read())   # the operator's line is not lost
        self.assertEqual(UserDB(self.dir).list(), ["alice@example.org", "bob@example.org"])

    def test_bad_alias_lines_skipped_and_directory_still_resolves(self):
        users = UserDB(self.dir)
        users.add("alice@example.org", "pw")
        AliasDB(self.dir).add("team@example.org", ["alice@example.org"])
        path = os.path.join(self.dir, "aliases")
        with open(path, "ab") as fh:
            fh.write(b'{"alias": "team", "targets": ["alice@example.org"]}\n'
                     b'{"alias": "x@example.org", "targets": "alice@example.org"}\n'
                     b'{"alias": "y@example.org", "targets": [5]}\n'
                     b'{"alias": "z@example.org", "targets": []}\n\xfe\n')
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            aliases = AliasDB(self.dir)
        self.assertEqual([r.getMessage().split(": ")[0] for r in logs.records],
                         ["%s:%d" % (path, n) for n in (2, 3, 4, 5, 6)])
        d = Directory(users, aliases, ["example.org"], None)
        self.assertEqual(d.resolve("team", "example.org"), ["alice@example.org"])
        self.assertIsNone(d.resolve("x", "example.org"))
        self.assertEqual(aliases.list(), {"team@example.org": ["alice@example.org"]})

    def test_unreadable_file_keeps_entries_and_refuses_a_rewrite(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        path = os.path.join(self.dir, "users")
        os.unlink(path)
        os.mkdir(path)                               # reading it fails (EISDIR), also as root
        with self.assertLogs("mailsrv.store", "ERROR"):
            db.reload_if_changed()
        self.assertTrue(db.exists("alice@example.org"))
        with self.assertRaisesRegex(ValueError, "users: cannot read"):
            db.add("bob@example.org", "pw")


class DisableTest(_TmpDir):
    def test_disabled_user_cannot_log_in_but_still_exists(self):
        db = UserDB(self.dir)
        db.add("alice@example.org", "pw")
        self.assertTrue(db.set_disabled("Alice@example.org", True))
        self.assertFalse(db.set_disabled("alice@example.org", True))
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            self.assertFalse(db.verify_password("alice@example.org", "pw"))
            self.assertIsNone(db.scram_credentials("alice@example.org"))
        self.assertTrue(all("disabled" in r.getMessage() for r in logs.records))
        self.assertTrue(db.exists("alice@example.org"))      # mail is still accepted
        self.assertTrue(UserDB(self.dir).is_disabled("alice@example.org"))
        db.set_disabled("alice@example.org", False)
        self.assertTrue(db.verify_password("alice@example.org", "pw"))
        self.assertIsNotNone(db.scram_credentials("alice@example.org"))
        self.assertRaises(ValueError, db.set_disabled, "nobody@example.org", True)


class AliasChecksTest(_TmpDir):
    """Issue 8: aliases that could never work are refused at `alias add`."""

    def setUp(self):
        super().setUp()
        self.users = UserDB(self.dir)
        self.aliases = AliasDB(self.dir)
        for u in ("alice@example.org", "bob@example.org"):
            self.users.add(u, "pw")

    def test_alias_equal_to_a_user_is_refused(self):
        with self.assertRaisesRegex(ValueError, "bob@example.org is a user"):
            self.aliases.add("Bob@example.org", ["alice@example.org"], users=self.users)
        self.assertEqual(self.aliases.list(), {})

    def test_loops_are_refused(self):
        add = self.aliases.add
        with self.assertRaisesRegex(ValueError, "alias loop: a@example.org -> a@example.org"):
            add("a@example.org", ["a@example.org"], users=self.users)
        add("a@example.org", ["b@example.org"], users=self.users)
        with self.assertRaisesRegex(ValueError, "b@example.org -> a@example.org -> b@example.org"):
            add("b@example.org", ["alice@example.org", "a@example.org"], users=self.users)
        with self.assertRaisesRegex(ValueError, "loop"):            # through plus-addressing
            add("b@example.org", ["a+x@example.org"], users=self.users)
        with self.assertRaisesRegex(ValueError, "loop"):            # through the catch-all
            add("*@example.org", ["nobody@example.org"], users=self.users)
        self.assertEqual(self.aliases.list(), {"a@example.org": ["b@example.org"]})
        # a user in the way ends the chain: no loop
        add("b@example.org", ["alice@example.org"], users=self.users)
        add("*@example.org", ["alice@example.org", "a@example.org"], users=self.users)

    def test_pointing_at_and_skipped_target_logged(self):
        self.aliases.add("team@example.org", ["alice@example.org", "bob@example.org"], users=self.users)
        self.users.delete("bob@example.org")
        self.assertEqual(self.aliases.pointing_at("bob@example.org"), ["team@example.org"])
        d = Directory(self.users, self.aliases, ["example.org"], None)
        with self.assertLogs("mailsrv.store", "WARNING") as logs:
            self.assertEqual(d.resolve("team", "example.org"), ["alice@example.org"])
        self.assertEqual(len(logs.records), 1)
        self.assertIn("alias team@example.org: target bob@example.org is not a user or alias, skipped",
                      logs.records[0].getMessage())

    def test_show_user(self):
        store = MailStore(self.dir, "mx.example.org")
        store.create_mailbox("alice@example.org")
        root = store.maildir_path("alice@example.org")
        for name, size in (("new/1.a", 10), ("cur/2.b:2,S", 20), (".Sent/cur/3.c:2,S", 5)):
            with open(os.path.join(root, name), "wb") as fh:
                fh.write(b"x" * size)
        self.aliases.add("team@example.org", ["alice@example.org"], users=self.users)
        self.users.set_disabled("alice@example.org", True)
        text = "\n".join(show_user(self.users, self.aliases, store, "Alice@Example.org"))
        self.assertIn("domain:     example.org", text)
        self.assertIn(root, text)
        self.assertRegex(text, r"INBOX +2 message\(s\) +30 octets")
        self.assertRegex(text, r"Sent +1 message\(s\) +5 octets")
        self.assertRegex(text, r"total +3 message\(s\) +35 octets")
        self.assertIn("DISABLED", text)
        self.assertIn("team@example.org", text)
        self.assertIn("last login: not recorded", text)
        self.assertRaises(ValueError, show_user, self.users, self.aliases, store, "nobody@example.org")


if __name__ == "__main__":
    unittest.main()

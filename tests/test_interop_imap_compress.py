"""isync/mbsync syncing with COMPRESS=DEFLATE (RFC 4978) against the whole server.

mbsync (isync 1.4 and later, built with zlib) sends ``COMPRESS DEFLATE``
after the login whenever the server announces COMPRESS=DEFLATE (its
``UseCompression`` defaults to on from isync 1.5; 1.4 always compresses).
The sync runs both ways, a second run changes nothing, and our log says the
session compressed.  Plain IMAP on loopback and STARTTLS.
"""

import os

from tests.test_interop_imap import BOB, BOB_PW, ImapInteropTest, messages_in, tool


class MbsyncCompressTest(ImapInteropTest):
    count = 100

    def config(self, local: str, tls: str) -> str:
        """mbsync 1.4 checks the certificate's DNS names only: "localhost" for TLS."""
        conf = os.path.join(self.work, "mbsyncrc-" + tls)
        with open(conf, "w") as f:
            f.write("IMAPAccount srv\nHost %s\nPort %d\nUser %s\nPass %s\nSSLType %s\n"
                    "CertificateFile %s\nAuthMechs LOGIN\n\n"
                    "IMAPStore srv\nAccount srv\n\n"
                    "MaildirStore loc\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
                    "Channel ch\nFar :srv:\nNear :loc:\nPatterns *\nCreate Both\nExpunge Both\n"
                    "SyncState *\nSync All\n"
                    % ("localhost" if tls != "None" else "127.0.0.1", self.ports["imap"], BOB, BOB_PW, tls,
                       _cert(), local, local))
        return conf

    def sync_compressed(self, tls: str) -> None:
        local = os.path.join(self.work, "local-" + tls)
        os.makedirs(local)
        conf = self.config(local, tls)
        with self.assertLogs("mailsrv.imap", "INFO") as logs:
            first = self.run_tool(["mbsync", "-D", "-c", conf, "-a"])
        self.assertIn(b"COMPRESS DEFLATE", first.stdout + first.stderr)
        self.assertTrue([line for line in logs.output if "imap compress deflate user=%s" % BOB in line],
                        logs.output)
        self.assertTrue([line for line in logs.output if "imap compress totals" in line], logs.output)
        self.assert_same_messages(messages_in(os.path.join(local, "INBOX")))
        before = self.local_messages(local)
        self.run_tool(["mbsync", "-c", conf, "-a"])
        self.assertEqual(self.local_messages(local), before)

    def local_messages(self, root):
        out = []
        for dirpath, _dirs, files in os.walk(root):
            if os.path.basename(dirpath) in ("cur", "new"):
                out += sorted(os.path.join(os.path.relpath(dirpath, root), n) for n in files)
        return sorted(out)

    @tool("mbsync")
    def test_mbsync_syncs_compressed(self):
        self.sync_compressed("None")

    @tool("mbsync")
    def test_mbsync_syncs_compressed_over_starttls(self):
        self.sync_compressed("STARTTLS")


def _cert() -> str:
    from tests.helpers import CERT
    return CERT

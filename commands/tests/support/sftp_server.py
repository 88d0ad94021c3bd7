"""An SFTP server for the storage probe tests: asyncssh on 127.0.0.1, on a free port, one user, chrooted
to --root (so "/in" is ROOT/in).

The user may log in with --password or with one of the client keys this script writes to --keys DIR:
DIR/client_ed25519 (OpenSSH format) and DIR/client_rsa (traditional PEM, "BEGIN RSA PRIVATE KEY").
With --kbdint-only the password is taken by keyboard-interactive only. The host key is generated afresh. Prints one JSON line {"port": …, "fingerprint": "SHA256:…"} when
ready, then serves until killed.
"""

import argparse
import asyncio
import json
import os

import asyncssh


class Server(asyncssh.SSHServer):
    def __init__(self, user: str, password: str, keys: "asyncssh.SSHAuthorizedKeys", kbdint_only: bool) -> None:
        self.user = user
        self.password = password
        self.keys = keys
        self.kbdint_only = kbdint_only

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return not self.kbdint_only

    def kbdint_auth_supported(self) -> bool:
        return self.kbdint_only

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str):
        return "", "", "", [("Password: ", False)]

    def validate_kbdint_response(self, username: str, responses) -> bool:
        return username == self.user and list(responses) == [self.password]

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.user and password == self.password

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.user and self.keys.validate(key, "127.0.0.1", "127.0.0.1") is not None


async def serve(args: argparse.Namespace) -> None:
    authorized = []
    for name, algorithm, form in [("client_ed25519", "ssh-ed25519", "openssh"), ("client_rsa", "ssh-rsa", "pkcs1-pem")]:
        key = asyncssh.generate_private_key(algorithm)
        path = os.path.join(args.keys, name)
        key.write_private_key(path, form)
        authorized.append(key.export_public_key().decode())
    keys = asyncssh.import_authorized_keys("".join(authorized))
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    root = os.path.realpath(args.root).encode()

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=lambda: Server(args.user, args.password, keys, args.kbdint_only),
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
        allow_scp=False,
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "fingerprint": host_key.get_fingerprint("sha256")}), flush=True)
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--kbdint-only", action="store_true",
                        help="take the password by keyboard-interactive only, as OpenSSH with PAM often does")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()

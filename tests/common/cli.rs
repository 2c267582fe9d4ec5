//! What the CLI test files (`cli.rs`, `cli_check_config.rs`, `cli_keys.rs`)
//! share: running `check-config` and `keys`, a SQLite config, a throwaway
//! certificate, and reading what `tollgate` printed.

use super::{tollgate, write_config, Ports};

pub fn sqlite_config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(dir, &Ports::new(), &[])
}

pub fn keys(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tollgate()
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// A throwaway self-signed certificate (CN and SAN localhost, 127.0.0.1,
// valid for a century), its key, and an unrelated key.
pub const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUM16Ay965jszvnLgeq5stWXyl4MowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNTA5MDMzN1oYDzIxMjYxMTAx
MDkwMzM3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR47KfKWjCoVY48guoSsGv2/mja24/X2O6LdmdNVOjIPhreUEiEkNHM
KMjeLy94z+ZNXbsuyqGgrlIyPD8t0BAPo28wbTAdBgNVHQ4EFgQUPaTkS0zuk3Df
gBvuEUZXTBCNEwAwHwYDVR0jBBgwFoAUPaTkS0zuk3DfgBvuEUZXTBCNEwAwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSQAwRgIhAPJKo1+BYe3fAbCzyvw23tqJIdPUfaHrOUMCtk53jM1pAiEA
mfmfBSjtvkPwSOnm77m3Mw2sWWT7vLc4U1VOPrQvjVY=
-----END CERTIFICATE-----
";
pub const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglr1dE0We9mE38Vru
1hA8pD1V0jc3RkOvpWVOxm9pTe2hRANCAAR47KfKWjCoVY48guoSsGv2/mja24/X
2O6LdmdNVOjIPhreUEiEkNHMKMjeLy94z+ZNXbsuyqGgrlIyPD8t0BAP
-----END PRIVATE KEY-----
";
pub const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/QppSiDuVcFPA5+X
gby5hTnmZ8tZohFXJh9DjBS5UcWhRANCAARUIsGB/ZcHag0baYv7IfLJ8eaxK5BJ
OcemDDGjGc/jvkZqdhbog4BX5wMJHdu6G7lA4+8fPgofuzVKo5PGsFjG
-----END PRIVATE KEY-----
";

/// `check-config FILE` (plus `args`): success, stdout, stderr.
pub fn check_config(file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tollgate()
        .arg("check-config")
        .arg(file)
        .args(args)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn printed<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
}

/// A child process killed when the test ends, even by a failed assertion.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

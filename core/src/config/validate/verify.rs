//! `verify:`: the verify API's listener, bound by the proxy process beside
//! its own listeners (so it must differ from them: `listeners`).

use super::raw::RawVerify;
use super::*;

impl Validator<'_> {
    pub(super) fn verify(&mut self, v: Option<&RawVerify>) -> VerifyConfig {
        let path = "verify.listen";
        let listen = v
            .and_then(|v| given(&v.listen))
            .and_then(|s| self.addr(path, s));
        VerifyConfig { listen }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn verify_listen_is_off_by_default_and_checked() {
        let c = parse("", "t.yaml").expect("valid");
        assert_eq!(c.verify.listen, None);
        let c = parse("verify: { listen: \"127.0.0.1:8082\" }\n", "t.yaml").expect("valid");
        assert_eq!(
            c.verify.listen,
            Some("127.0.0.1:8082".parse().expect("addr"))
        );
        let c = parse("verify: {}\n", "t.yaml").expect("valid");
        assert_eq!(c.verify.listen, None);
        for (bad, why) in [
            ("verify: { listen: nowhere }\n", "invalid address"),
            ("verify: { listen: \"localhost:8082\" }\n", "host names"),
            (
                "verify: { listen: \"127.0.0.1:8080\" }\n",
                "already used by proxy.listen",
            ),
            (
                "proxy: { metrics_listen: \"127.0.0.1:9\" }\nverify: { listen: \"127.0.0.1:9\" }\n",
                "already used by proxy.metrics_listen",
            ),
            (
                "verify: { listen: \"127.0.0.1:8082\", token: x }\n",
                "unknown field",
            ),
            ("verify: [1]\n", "verify settings"),
        ] {
            let e = parse(bad, "t.yaml").expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("verify"), "{bad:?}: {e}");
        }
    }
}

//! `log:`.

use super::*;

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

impl Validator<'_> {
    pub(super) fn log(&mut self, l: &RawLog) -> LogConfig {
        let levels: Vec<(&str, &str)> = LOG_LEVELS.iter().map(|l| (*l, *l)).collect();
        let level = self
            .choice_or("log.level", &l.level, &levels, DEFAULT_LOG_LEVEL)
            .to_string();
        let format = self.choice_or(
            "log.format",
            &l.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        let access_log = self.flag_or("log.access_log", &l.access_log, true);
        LogConfig {
            level,
            format,
            access_log,
        }
    }
}

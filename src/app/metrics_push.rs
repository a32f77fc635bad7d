//! `--metrics-push URL`: the metrics of a run (or an audit) sent to a Prometheus Pushgateway
//! when it ends, for jobs whose pod is gone before anything could scrape it (a CronJob).
//!
//! One `PUT {URL}/metrics/job/{job}/plan/{plan}` replaces the group, so the Pushgateway holds
//! the last run's metrics of each plan, whatever the earlier run exported. A push that fails
//! is said and recorded by the caller; it never changes the exit code. The URL may carry
//! credentials (`https://user:password@host`, sent as Basic auth): no message shows them.

use std::time::Duration;

use base64::Engine as _;
use url::Url;

use crate::cli::PushUrl;
use crate::report::hints::chain as error_chain;

/// How long one push may take, connection included: a Pushgateway that does not answer
/// must not keep a finished run's pod alive.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The text format the Pushgateway reads ([`crate::report::metrics`] writes it).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Where to push, as the user gave it (credentials included, never shown).
#[derive(Clone)]
pub struct Pushgateway {
    url: Url,
}

/// Why the metrics could not be pushed. Names the URL without its credentials.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("--metrics-push must be an http or https URL without a query or fragment")]
    NotHttp,
    #[error("pushing the metrics to {url}: {reason}")]
    Send { url: String, reason: String },
    #[error("pushing the metrics to {url}: the Pushgateway answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

impl std::fmt::Debug for Pushgateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pushgateway({})", self.shown())
    }
}

impl Pushgateway {
    /// The `--metrics-push` value; the error never quotes it (it may hold a password).
    pub fn parse(text: &str) -> Result<Self, PushError> {
        let url = Url::parse(text).map_err(|_| PushError::NotHttp)?;
        let usable = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.query().is_none()
            && url.fragment().is_none();
        match usable {
            true => Ok(Pushgateway { url }),
            false => Err(PushError::NotHttp),
        }
    }

    /// The URL as messages show it: without user name or password.
    pub fn shown(&self) -> String {
        let mut url = self.url.clone();
        // Only fails for URLs that cannot have credentials, which then have none.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.to_string()
    }

    /// The group's URL: `{URL}/metrics/job/{job}` then `/{name}/{value}` for each label, a
    /// value that is empty or holds anything but `[A-Za-z0-9._-]` in the Pushgateway's
    /// base64 form (`/{name}@base64/{value}`: URL-safe alphabet; `=` for the empty value).
    pub fn group_url(&self, job: &str, labels: &[(&str, &str)]) -> Url {
        let mut url = self.url.clone();
        let mut path: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        path.extend(["metrics".to_string(), "job".to_string()]);
        path.push(job.to_string());
        for (name, value) in labels {
            let plain = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            match (plain, value.is_empty()) {
                (true, _) => path.extend([name.to_string(), value.to_string()]),
                (false, true) => path.extend([format!("{name}@base64"), "=".to_string()]),
                (false, false) => path.extend([
                    format!("{name}@base64"),
                    base64::engine::general_purpose::URL_SAFE.encode(value),
                ]),
            }
        }
        url.set_path(&path.join("/"));
        url
    }

    /// Replace the group `job` + `labels` with `text` (Prometheus text format, whose samples
    /// carry neither `job` nor `instance`).
    pub async fn push(
        &self,
        job: &str,
        labels: &[(&str, &str)],
        text: String,
    ) -> Result<(), PushError> {
        let url = self.group_url(job, labels);
        let shown = self.shown();
        let send = |e: reqwest::Error| PushError::Send {
            url: shown.clone(),
            reason: error_chain(&e.without_url()),
        };
        // TLS verified against the system roots (rustls), as for registries.
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .timeout(PUSH_TIMEOUT)
            .build()
            .map_err(send)?;
        // reqwest sends the URL's user name and password as Basic auth, and not in the URL.
        let answer = client
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT)
            .body(text)
            .send()
            .await
            .map_err(send)?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let body = answer.text().await.unwrap_or_default();
        Err(PushError::Refused {
            url: shown,
            status: status.as_u16(),
            body: body.trim().chars().take(300).collect(),
        })
    }
}

/// `--metrics-push` checked before the command does anything: an error (exit code 2, see
/// [`super::exit_code`]) when it is not a URL a push could go to.
pub fn check(url: Option<&PushUrl>) -> Result<Option<Pushgateway>, PushError> {
    url.map(|u| Pushgateway::parse(&u.0)).transpose()
}

/// The plan label: the plan file's stem (`plans/prod.toml` -> `prod`).
pub fn plan_label(plan: &std::path::Path) -> String {
    plan.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Push and say how it went: `None` when it went through, else the message (said on stderr
/// as a warning), for the report. A failed push never fails the run.
pub async fn push_and_say(
    gateway: &Pushgateway,
    job: &str,
    labels: &[(&str, &str)],
    text: String,
    json: bool,
) -> Option<String> {
    match gateway.push(job, labels, text).await {
        Ok(()) => None,
        Err(e) => {
            let what = error_chain(&e);
            super::lines::emit(json, "WARN", &format!("warning: {what}"));
            Some(what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 26, --metrics-push: the grouping key in the path, base64 where the value needs it.
    #[test]
    fn group_urls_follow_the_pushgateway_api() {
        let g = Pushgateway::parse("http://u:secret@127.0.0.1:9091/base/").unwrap();
        let url = |plan: &str| g.group_url("ferry", &[("plan", plan)]).to_string();
        assert_eq!(
            url("prod"),
            "http://u:secret@127.0.0.1:9091/base/metrics/job/ferry/plan/prod"
        );
        assert_eq!(
            url("a/b"),
            "http://u:secret@127.0.0.1:9091/base/metrics/job/ferry/plan@base64/YS9i"
        );
        assert!(url("").ends_with("/plan@base64/="));
        assert_eq!(g.shown(), "http://127.0.0.1:9091/base/");
        assert!(!format!("{g:?}").contains("secret"));
        let root = Pushgateway::parse("https://pg.example").unwrap();
        assert_eq!(
            root.group_url("ferry-verify", &[("plan", "x")]).as_str(),
            "https://pg.example/metrics/job/ferry-verify/plan/x"
        );
    }

    #[test]
    fn only_http_urls_and_never_quoted() {
        for bad in [
            "ftp://h/",
            "pushgateway:9091",
            "http://h/?a=1",
            "not a url s3cret",
        ] {
            let e = Pushgateway::parse(bad).unwrap_err().to_string();
            assert!(!e.contains(bad), "{e}");
        }
    }
}

use super::*;

#[test]
fn debug_redacts_the_token() {
    use crate::registry::credential_source::Fixed;
    let token = Credential::Basic {
        username: "bot".into(),
        password: SecretString::from("ghp_canary0123456789".to_string()),
    };
    let api = PackagesApi::new(
        Url::parse("https://api.github.com").unwrap(),
        Arc::new(Fixed(token)),
        reqwest::Client::new(),
        "ghcr.io",
        Arc::new(Throttle::new("ghcr.io", None, None)),
        0,
    );
    let d = format!("{api:?}");
    assert!(!d.contains("canary"), "{d}");
    assert!(d.contains("ghcr.io") && d.contains("redacted"), "{d}");
}

#[test]
fn names() {
    assert_eq!(
        split_repository("myorg/team/app"),
        Some(("myorg", "team/app"))
    );
    assert_eq!(encode("team/app"), "team%2Fapp");
}

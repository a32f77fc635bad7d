//! Collections: `<Kind>List` pages in etcd key order, `limit` and `continue` tokens shaped and
//! checked as kube-apiserver's, resource versions and their 410 and 504 answers.

use super::*;

/// A list item: the object without `kind` and `apiVersion`, as the server writes items.
pub(super) struct Item<'a>(pub(super) &'a Value);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let fields = m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "kind" && k.as_str() != "apiVersion");
                let mut map = s.serialize_map(None)?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

pub(super) struct Items<'a>(pub(super) &'a [Arc<Value>]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for i in self.0 {
            seq.serialize_element(&Item(i))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
pub(super) struct ListBody<'a> {
    pub(super) kind: String,
    #[serde(rename = "apiVersion")]
    pub(super) api_version: &'static str,
    pub(super) metadata: Value,
    pub(super) items: Items<'a>,
}

/// kube-apiserver's continue token (k8s.io/apiserver storage): field order as Go writes it.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct ContinueToken {
    #[serde(default)]
    pub(super) v: String,
    #[serde(default)]
    pub(super) rv: i64,
    #[serde(default)]
    pub(super) start: String,
}

pub(super) fn encode_continue(start: &str, rv: i64) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).expect("continue token"))
}

/// The start key (relative to the collection) and resource version of a token, or the
/// reason kube-apiserver gives for refusing it.
pub(super) fn decode_continue(token: &str) -> Result<(String, i64), String> {
    const INVALID: &str = "continue key is not valid";
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _)
                | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                base64::DecodeError::InvalidLength(n) => n,
                base64::DecodeError::InvalidPadding => token.len(),
            };
            format!("{INVALID}: illegal base64 data at input byte {at}")
        })?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|e| format!("{INVALID}: {e}"))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(format!(
            "{INVALID}: server does not recognize this encoded version {}",
            t.v
        ));
    }
    if t.rv == 0 {
        return Err(format!(
            "{INVALID}: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ));
    }
    if t.start.is_empty() {
        return Err(format!(
            "{INVALID}: encoded start key empty (version meta.k8s.io/v1)"
        ));
    }
    // path.Clean must leave "/" + start unchanged: no traversal out of the collection.
    let key = if t.start.starts_with('/') {
        t.start.clone()
    } else {
        format!("/{}", t.start)
    };
    let unclean = key.contains("//")
        || (key.len() > 1 && key.ends_with('/'))
        || key.split('/').any(|seg| seg == "." || seg == "..");
    if unclean {
        return Err(format!("{INVALID}: {}", t.start));
    }
    Ok((key[1..].to_string(), t.rv))
}

/// One page (or all) of a list, read under the lock; serialized outside it.
pub(super) struct Page {
    pub(super) items: Vec<Arc<Value>>,
    pub(super) rv: u64,
    pub(super) next: Option<(String, u64)>,
}

/// `GET` of a collection: a list.
pub(super) fn collection(
    inner: &Inner,
    method: &Method,
    user: &str,
    res: Res,
    namespace: Option<&str>,
    query: &[(String, String)],
) -> Response {
    if method != Method::GET {
        return method_not_allowed(inner);
    }
    if let Res::Kind(k) = res {
        if inner
            .data
            .lock()
            .expect("kube data")
            .uninstalled
            .contains(&k)
        {
            return not_found(inner);
        }
    }
    let param = |k: &str| {
        query
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let verb = if matches!(param("watch"), "true" | "1") {
        "watch"
    } else {
        "list"
    };
    if !inner
        .data
        .lock()
        .expect("kube data")
        .access(res)
        .allows(namespace)
    {
        return forbidden(inner, user, verb, res, namespace, None);
    }
    if verb == "watch" {
        return bad_request(inner, "fake kube API server: watch is not implemented");
    }
    for sel in ["labelSelector", "fieldSelector"] {
        if !param(sel).is_empty() {
            return bad_request(
                inner,
                &format!("fake kube API server: {sel} is not implemented"),
            );
        }
    }
    let limit = match param("limit") {
        "" => 0,
        l => match l.parse::<i64>() {
            Ok(n) => n.max(0) as usize,
            Err(_) => {
                return bad_request(
                    inner,
                    &format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(l)),
                )
            }
        },
    };
    let (cont, rv_param, rv_match) = (
        param("continue"),
        param("resourceVersion"),
        param("resourceVersionMatch"),
    );
    let prefix = match namespace {
        Some(ns) => format!("{ns}/"),
        None => String::new(),
    };

    let page = {
        let data = inner.data.lock().expect("kube data");
        let (snapshot, start) = if !cont.is_empty() {
            let (start, token_rv) = match decode_continue(cont) {
                Ok(t) => t,
                Err(e) => {
                    drop(data);
                    return bad_request(inner, &format!("invalid continue token: {e}"));
                }
            };
            if !rv_param.is_empty() && rv_param != "0" {
                drop(data);
                return bad_request(
                    inner,
                    "specifying resource version is not allowed when using continue",
                );
            }
            let snapshot = if token_rv < 0 {
                data.rv
            } else if (token_rv as u64) < data.compacted {
                drop(data);
                let mut s = status_value(
                    StatusCode::GONE,
                    "Expired",
                    CONTINUE_EXPIRED_INCONSISTENT,
                    None,
                );
                s["metadata"] = json!({"continue": encode_continue(&start, -1)});
                return json_response(inner, StatusCode::GONE, &s);
            } else if token_rv as u64 > data.rv {
                drop(data);
                return status(
                    inner,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "etcdserver: mvcc: required revision is a future revision",
                    None,
                );
            } else {
                token_rv as u64
            };
            (snapshot, format!("{prefix}{start}"))
        } else {
            let invalid = |msg: String| {
                status(
                    inner,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("ListOptions.meta.k8s.io \"\" is invalid: {msg}"),
                    None,
                )
            };
            match rv_match {
                "" | "Exact" | "NotOlderThan" => {}
                other => {
                    drop(data);
                    return invalid(format!(
                        "resourceVersionMatch: Unsupported value: {}: supported values: \"Exact\", \"NotOlderThan\"",
                        go_quote(other)
                    ));
                }
            }
            if !rv_match.is_empty() && rv_param.is_empty() {
                drop(data);
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                );
            }
            if rv_match == "Exact" && rv_param == "0" {
                drop(data);
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
                );
            }
            let snapshot = match rv_param {
                "" | "0" => data.rv,
                n => {
                    let Ok(n) = n.parse::<u64>() else {
                        drop(data);
                        return bad_request(
                            inner,
                            &format!("invalid resource version: resource version is not well formed: {n}"),
                        );
                    };
                    if n > data.rv {
                        let current = data.rv;
                        drop(data);
                        return status(
                            inner,
                            StatusCode::GATEWAY_TIMEOUT,
                            "Timeout",
                            &format!("Too large resource version: {n}, current: {current}"),
                            Some(json!({
                                "causes": [{
                                    "reason": "ResourceVersionTooLarge",
                                    "message": "Too large resource version",
                                }],
                                "retryAfterSeconds": 1,
                            })),
                        );
                    }
                    // With a limit (or Exact) a resource version is read exactly.
                    let exact = rv_match == "Exact" || (rv_match.is_empty() && limit > 0);
                    if !exact {
                        data.rv
                    } else if n < data.compacted {
                        drop(data);
                        return status(inner, StatusCode::GONE, "Expired", LIST_EXPIRED, None);
                    } else {
                        n
                    }
                }
            };
            (snapshot, prefix.clone())
        };

        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0u64;
        if let Some(objects) = data.objects.get(&res) {
            let visible = objects
                .range(start..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, hist)| {
                    hist.iter()
                        .rev()
                        .find(|(rv, _)| *rv <= snapshot)
                        .and_then(|(_, o)| o.as_ref())
                        .map(|o| (k, o))
                });
            for (k, o) in visible {
                if limit > 0 && items.len() == limit {
                    remaining += 1;
                    continue;
                }
                items.push(o.clone());
                if limit > 0 && items.len() == limit {
                    next = Some(format!("{}\u{0}", &k[prefix.len()..]));
                }
            }
        }
        Page {
            items,
            rv: snapshot,
            next: match next {
                Some(start) if remaining > 0 => Some((start, remaining)),
                _ => None,
            },
        }
    };

    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some((start, remaining)) = &page.next {
        metadata["continue"] = json!(encode_continue(start, page.rv as i64));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = ListBody {
        kind: format!("{}List", res.kind()),
        api_version: res.api_version(),
        metadata,
        items: Items(&page.items),
    };
    respond(
        inner,
        StatusCode::OK,
        serde_json::to_vec(&body).expect("serialize list"),
    )
}

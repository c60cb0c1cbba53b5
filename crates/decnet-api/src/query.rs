//! Query strings: parameters decoded with `form_urlencoded`, and the
//! redacted form the access log records.

use std::borrow::Cow;

/// Query parameters whose values are secrets (never logged).
const SECRET_PARAMS: [&str; 3] = ["ticket", "token", "access_token"];

/// The value of parameter `name` (percent- and `+`-decoded), the LAST one
/// when it is repeated (as Starlette reads it); `Some("")` for `?name` and
/// `?name=`.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(key, _)| key == name)
        .last()
        .map(|(_, value)| value.into_owned())
}

/// The query with the values of `ticket`, `token` and `access_token`
/// replaced by `[redacted]`, other pairs kept as sent; empty without a query.
pub fn redacted(query: Option<&str>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            if SECRET_PARAMS.contains(&decoded.as_str()) {
                Cow::Owned(format!("{key}=[redacted]"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_and_the_last_one_wins() {
        assert_eq!(
            param(Some("a=1&ticket=x%2By+z"), "ticket").as_deref(),
            Some("x+y z")
        );
        assert_eq!(param(Some("ticket"), "ticket").as_deref(), Some(""));
        assert_eq!(
            param(Some("ticket=a&ticket=b"), "ticket").as_deref(),
            Some("b")
        );
        assert_eq!(param(None, "ticket"), None);
        assert_eq!(param(Some("t%69cket=x"), "ticket").as_deref(), Some("x"));
        assert_eq!(param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn secrets_are_redacted_even_when_encoded() {
        assert_eq!(
            redacted(Some("ticket=secret&last_event_id=5&token=jwt")),
            "?ticket=[redacted]&last_event_id=5&token=[redacted]"
        );
        assert_eq!(
            redacted(Some("t%69cket=s&access_token")),
            "?t%69cket=[redacted]&access_token=[redacted]"
        );
        assert_eq!(redacted(None), "");
    }
}

//! Request parameters: the query string merged with an urlencoded or
//! multipart body (python-libmaas base64-encodes every multipart part and
//! quotes the boundary; section 1.4 of the spec).

use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use bytes::Bytes;

use crate::error::ApiError;

/// Name/value pairs in arrival order; `name[]` is the same as `name`.
/// Multipart parts that carry a file name are also kept as files, as
/// bytes (script output need not be text).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    files: Vec<Upload>,
}

/// A multipart part with a file name.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    /// The file name (MAAS names script output files after the script).
    pub(crate) file_name: String,
    /// The content, base64 already undone.
    pub(crate) data: Vec<u8>,
}

impl Params {
    /// Query parameters, then (for POST and PUT) the body's.
    pub(crate) async fn parse(
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Self, ApiError> {
        let mut p = Params::default();
        if let Some(q) = query {
            p.add_urlencoded(q.as_bytes());
        }
        if !(method == Method::POST || method == Method::PUT) || body.is_empty() {
            return Ok(p);
        }
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "multipart/form-data" => p.add_multipart(ct, body).await?,
            "application/x-www-form-urlencoded" | "" => p.add_urlencoded(&body),
            // JSON and other bodies carry no form parameters.
            _ => {}
        }
        Ok(p)
    }

    fn add_urlencoded(&mut self, raw: &[u8]) {
        for (k, v) in form_pairs(raw) {
            self.push(k, v);
        }
    }

    async fn add_multipart(&mut self, content_type: &str, body: Bytes) -> Result<(), ApiError> {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| ApiError::BadRequest(format!("bad multipart body: {e}")))?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(ApiError::BadRequest(format!("bad multipart body: {e}"))),
            };
            let name = field.name().unwrap_or("").to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let base64 = field
                .headers()
                .get("content-transfer-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"));
            let data = field
                .bytes()
                .await
                .map_err(|e| ApiError::BadRequest(format!("bad multipart part {name:?}: {e}")))?;
            let data = if base64 {
                let compact: Vec<u8> = data
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|e| {
                        ApiError::BadRequest(format!("part {name:?} is not base64: {e}"))
                    })?
            } else {
                data.to_vec()
            };
            if let Some(file_name) = file_name {
                // A file: kept as bytes; text files are parameters too.
                if let Ok(text) = std::str::from_utf8(&data) {
                    self.push(name, text.to_owned());
                }
                self.files.push(Upload { file_name, data });
                continue;
            }
            let value = String::from_utf8(data)
                .map_err(|_| ApiError::BadRequest(format!("part {name:?} is not UTF-8 text")))?;
            self.push(name, value);
        }
        Ok(())
    }

    fn push(&mut self, name: String, value: String) {
        let name = name.strip_suffix("[]").map(str::to_owned).unwrap_or(name);
        self.pairs.push((name, value));
    }

    /// The first value of `name` (empty values count as absent).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`; a comma-joined single value is split.
    pub(crate) fn get_all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The multipart parts that carried a file name, in arrival order.
    pub(crate) fn files(&self) -> &[Upload] {
        &self.files
    }

    /// The `op` parameter (the query's first, then the body's).
    pub(crate) fn op(&self) -> Option<&str> {
        self.get("op")
    }

    /// Every pair except `op`.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter(|(k, _)| k != "op")
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A boolean in MAAS's spellings; `default` when absent.
    pub(crate) fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "yes" | "on" | "1") => Ok(true),
            Some("false" | "no" | "off" | "0") => Ok(false),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("{other:?} is not a boolean (true/false)."),
            )),
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, percent- and plus-decoded.
pub(crate) fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|&b| b == b'&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let k = decode(it.next().unwrap_or_default());
            let v = decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn decode(raw: &[u8]) -> String {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn python_libmaas_multipart_with_base64_parts_and_a_quoted_boundary() {
        let body = "--===============123==\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
MIME-Version: 1.0\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: form-data; name=\"tags\"\r\n\
\r\n\
Z3B1\r\n\
--===============123==\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
MIME-Version: 1.0\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: form-data; name=\"tags\"\r\n\
\r\n\
c3Nk\r\n\
--===============123==--\r\n";
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=\"===============123==\""
                .parse()
                .unwrap(),
        );
        let p = Params::parse(&Method::POST, Some("op=allocate"), &h, Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(p.op(), Some("allocate"));
        assert_eq!(p.get_all("tags"), ["gpu", "ssd"]);
    }

    #[tokio::test]
    async fn urlencoded_bodies_repeat_keys_and_brackets_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::parse(
            &Method::POST,
            Some("op="),
            &h,
            Bytes::from("hostname%5B%5D=a+b&hostname=c&x=%26y"),
        )
        .await
        .unwrap();
        assert_eq!(p.op(), None, "an empty op is no op");
        assert_eq!(p.get_all("hostname"), ["a b", "c"]);
        assert_eq!(p.get("x"), Some("&y"));
        assert!(p.flag("x", false).is_err());
    }
}

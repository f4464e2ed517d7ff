//! The parameters of an EC2 Query request: `application/x-www-form-urlencoded` pairs in the
//! body (or the query string), with lists and structures spelled as dotted, numbered names:
//! `DiskContainer.1.UserBucket.S3Bucket`, `TagSpecification.1.Tag.2.Key`, `ImportTaskId.3`.
//!
//! Parsing is bounded: at most [`MAX_PARAMS`] parameters, names of at most [`MAX_NAME`] bytes,
//! values of at most [`MAX_VALUE`] bytes, list indexes from 1 to [`MAX_INDEX`]; a name given
//! twice is an error, never a silent choice.

use std::collections::BTreeMap;

use engine::request::shown;

/// Most parameters in one request.
pub const MAX_PARAMS: usize = 1000;
/// Longest parameter name.
pub const MAX_NAME: usize = 256;
/// Longest parameter value.
pub const MAX_VALUE: usize = 64 * 1024;
/// Largest list index.
pub const MAX_INDEX: usize = 1000;

/// A malformed request: the EC2 code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// `InvalidParameterValue`, `MissingParameter`, `MalformedQueryString`, …
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        code,
        message: message.into(),
    }
}

/// The parameters of a request, or the members under one prefix of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
    prefix: String,
}

/// Decodes `k=v&…` pairs the one way this endpoint does: `application/x-www-form-urlencoded`
/// (`%XX` escapes, and `+` is a space). SigV4 verification canonicalizes the query string from
/// these same pairs and the parameters are read from them, so a request cannot be verified
/// under one reading and acted on under another (`%2B` and `+` are different values).
pub fn decode_pairs(form: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(form).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

impl Params {
    /// Parses a form-encoded body or query string.
    pub fn parse(form: &[u8]) -> Result<Params, ParamError> {
        let mut map = BTreeMap::new();
        for (k, v) in decode_pairs(form) {
            if map.len() >= MAX_PARAMS {
                return Err(err(
                    "MalformedQueryString",
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
            if k.is_empty() || k.len() > MAX_NAME || k.chars().any(char::is_control) {
                return Err(err(
                    "MalformedQueryString",
                    format!(
                        "a parameter name is empty, longer than {MAX_NAME} bytes or holds control characters"
                    ),
                ));
            }
            if v.len() > MAX_VALUE {
                return Err(err(
                    "InvalidParameterValue",
                    format!(
                        "the value of {} is longer than {MAX_VALUE} bytes",
                        shown(&k)
                    ),
                ));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(err(
                    "InvalidParameterValue",
                    format!("the parameter {} is given more than once", shown(&k)),
                ));
            }
        }
        Ok(Params {
            map,
            prefix: String::new(),
        })
    }

    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The value of `name` (relative to this prefix).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(&self.full(name)).map(String::as_str)
    }

    /// The value of `name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, ParamError> {
        self.get(name).ok_or_else(|| {
            err(
                "MissingParameter",
                format!("the request must contain the parameter {}", self.full(name)),
            )
        })
    }

    /// `true` / `false`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(err(
                "InvalidParameterValue",
                format!(
                    "{} must be true or false, not {}",
                    self.full(name),
                    shown(v)
                ),
            )),
        }
    }

    /// An integer within `range`.
    pub fn int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(err(
                    "InvalidParameterValue",
                    format!(
                        "{} must be an integer from {} to {}, not {}",
                        self.full(name),
                        range.start(),
                        range.end(),
                        shown(v)
                    ),
                )),
            },
        }
    }

    /// Whether any parameter starts with `name.` or is `name`.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        let f = self.full(name);
        let dotted = format!("{f}.");
        self.map
            .range(f.clone()..)
            .take_while(|(k, _)| k.starts_with(&f))
            .any(|(k, _)| *k == f || k.starts_with(&dotted))
    }

    /// The members of the structure `name` (`name.Field` becomes `Field`).
    #[must_use]
    pub fn member(&self, name: &str) -> Params {
        Params {
            map: self.map.clone(),
            prefix: format!("{}.", self.full(name)),
        }
    }

    /// The list `name`: the members `name.1`, `name.2`, … in order, as structures. Indexes
    /// must run from 1 without gaps.
    pub fn list(&self, name: &str) -> Result<Vec<Params>, ParamError> {
        let f = format!("{}.", self.full(name));
        let mut indexes = std::collections::BTreeSet::new();
        for k in self
            .map
            .range(f.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&f))
        {
            let idx = k[f.len()..].split('.').next().unwrap_or_default();
            match idx.parse::<usize>() {
                Ok(n) if (1..=MAX_INDEX).contains(&n) && !idx.starts_with('0') => {
                    indexes.insert(n);
                }
                _ => {
                    return Err(err(
                        "InvalidParameterValue",
                        format!(
                            "{} is not a list member: lists are numbered {f}1, {f}2, … up to {MAX_INDEX}",
                            shown(k)
                        ),
                    ));
                }
            }
        }
        if let Some((pos, n)) = indexes.iter().enumerate().find(|(p, n)| **n != p + 1) {
            return Err(err(
                "InvalidParameterValue",
                format!("{f}{} is given but {f}{} is missing", n, pos + 1),
            ));
        }
        Ok(indexes
            .into_iter()
            .map(|n| Params {
                map: self.map.clone(),
                prefix: format!("{f}{n}."),
            })
            .collect())
    }

    /// The list of plain values `name.1`, `name.2`, …
    pub fn strings(&self, name: &str) -> Result<Vec<String>, ParamError> {
        let f = format!("{}.", self.full(name));
        let mut out = Vec::new();
        for (i, item) in self.list(name)?.iter().enumerate() {
            let key = format!("{f}{}", i + 1);
            match item.map.get(&key) {
                Some(v) => out.push(v.clone()),
                None => {
                    return Err(err(
                        "InvalidParameterValue",
                        format!("{key} must be a plain value"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Names of every parameter under this prefix, for refusing unknown ones.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let p = self.prefix.clone();
        self.map
            .keys()
            .filter(move |k| k.starts_with(&p))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nested_lists_and_structures() {
        let p = Params::parse(
            b"Action=ImportImage&Version=2016-11-15&DiskContainer.1.Format=VMDK\
              &DiskContainer.1.UserBucket.S3Bucket=src&DiskContainer.1.UserBucket.S3Key=a%2Fb.vmdk\
              &DiskContainer.2.Url=s3%3A%2F%2Fsrc%2Fdata.vmdk&Encrypted=true\
              &TagSpecification.1.ResourceType=import-image-task&TagSpecification.1.Tag.1.Key=team\
              &TagSpecification.1.Tag.1.Value=blue&ImportTaskId.1=import-ami-1&ImportTaskId.2=import-ami-2",
        )
        .unwrap();
        assert_eq!(p.required("Action").unwrap(), "ImportImage");
        let dcs = p.list("DiskContainer").unwrap();
        assert_eq!(dcs.len(), 2);
        assert_eq!(dcs[0].get("Format"), Some("VMDK"));
        let ub = dcs[0].member("UserBucket");
        assert_eq!(
            (ub.get("S3Bucket"), ub.get("S3Key")),
            (Some("src"), Some("a/b.vmdk"))
        );
        assert!(dcs[0].has("UserBucket") && !dcs[1].has("UserBucket"));
        assert_eq!(dcs[1].get("Url"), Some("s3://src/data.vmdk"));
        assert_eq!(p.bool("Encrypted").unwrap(), Some(true));
        let tags = p.list("TagSpecification").unwrap()[0].list("Tag").unwrap();
        assert_eq!(
            (tags[0].get("Key"), tags[0].get("Value")),
            (Some("team"), Some("blue"))
        );
        assert_eq!(
            p.strings("ImportTaskId").unwrap(),
            ["import-ami-1", "import-ami-2"]
        );
        assert!(p.list("Nothing").unwrap().is_empty());
        assert_eq!(p.required("Platform").unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn malformed_lists_and_values_are_refused() {
        for (form, words) in [
            (&b"A=1&A=2"[..], "more than once"),
            (b"DiskContainer.2.Format=VMDK", "DiskContainer.1 is missing"),
            (b"DiskContainer.0.Format=VMDK", "not a list member"),
            (b"DiskContainer.01.Format=VMDK", "not a list member"),
            (b"DiskContainer.x.Format=VMDK", "not a list member"),
            (b"DiskContainer.1001.Format=VMDK", "not a list member"),
        ] {
            let e = Params::parse(form).and_then(|p| p.list("DiskContainer").map(|_| ()));
            assert!(e.as_ref().unwrap_err().message.contains(words), "{e:?}");
        }
        let p = Params::parse(b"Encrypted=yes&MaxResults=5000").unwrap();
        assert!(p.bool("Encrypted").is_err());
        assert!(p.int("MaxResults", 5..=1000).is_err());
        let many: String = (0..1001).map(|i| format!("P{i}=1&")).collect();
        assert_eq!(
            Params::parse(many.as_bytes()).unwrap_err().code,
            "MalformedQueryString"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_form_gets_an_answer(form in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(p) = Params::parse(&form) {
                for name in ["DiskContainer", "Tag", "A"] {
                    if let Ok(l) = p.list(name) {
                        for m in &l {
                            let _ = m.strings("X");
                        }
                    }
                }
            }
        }
    }
}

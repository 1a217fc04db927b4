//! Templates: built-in ones, overridable by files in a user directory,
//! found in MAAS's preseed lookup order and rendered with minijinja.
//!
//! For a prefix (`enlist`, `enlist_userdata`, `commissioning`, `curtin`,
//! `curtin_userdata`, or this crate's `commissioning_userdata`), the
//! candidate names are, first existing wins:
//!
//! ```text
//! {prefix}_{osystem}_{arch}_{subarch}_{release}_{hostname}
//! {prefix}_{osystem}_{arch}_{subarch}_{release}
//! {prefix}_{osystem}_{arch}_{subarch}
//! {prefix}_{osystem}_{arch}
//! {prefix}_{osystem}
//! {prefix}
//! generic
//! ```
//!
//! An empty prefix drops its underscore. Without a machine (enlistment)
//! the names with machine parts are skipped, and so is any name with an
//! empty part. Every name is tried in the user directory first, then among
//! the built-in templates (MAAS reads its locations the same way: a
//! `generic` file of the user's beats a more specific built-in one).
//!
//! Undefined variables are errors, so a misspelt name in a user's template
//! is reported with its file and line instead of rendering as nothing.

use std::path::{Path, PathBuf};

use maas_core::machine::Machine;
use serde::Serialize;

use crate::error::{CurtinError, invalid};

/// The name tried last.
pub const GENERIC: &str = "generic";

/// The built-in templates, by file name.
const BUILTINS: &[(&str, &str)] = &[
    ("curtin_userdata", include_str!("templates/curtin_userdata")),
    ("enlist", include_str!("templates/enlist")),
    ("commissioning", include_str!("templates/commissioning")),
    ("curtin", include_str!("templates/curtin")),
    ("enlist_userdata", include_str!("templates/enlist_userdata")),
    (
        "commissioning_userdata",
        include_str!("templates/commissioning_userdata"),
    ),
    (GENERIC, include_str!("templates/generic")),
];

/// Checks an OS or release name before it becomes part of a file name.
pub(crate) fn check_name_part(field: &'static str, value: &str) -> Result<(), CurtinError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with(['.', '-'])
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "expected lower-case letters, digits, '.', '-' or '+' (at most 64)",
        ))
    }
}

/// The candidate template names for `prefix`, in lookup order.
///
/// `machine` is `None` for enlistment; `osystem` and `release` may be empty
/// then. Non-empty ones must be plain names (checked).
pub fn candidate_names(
    prefix: &str,
    osystem: &str,
    release: &str,
    machine: Option<&Machine>,
) -> Result<Vec<String>, CurtinError> {
    if !prefix.is_empty() {
        check_name_part("template prefix", &prefix.replace('_', "-"))?;
    }
    if !osystem.is_empty() {
        check_name_part("osystem", osystem)?;
    }
    if !release.is_empty() {
        check_name_part("release", release)?;
    }
    let (arch, subarch, host) = match machine {
        Some(m) => (
            Some(m.architecture.arch().to_owned()),
            Some(m.architecture.subarch().to_owned()),
            Some(m.hostname.as_str().to_owned()),
        ),
        None => (None, None, None),
    };
    let forms: [Vec<Option<&str>>; 6] = [
        vec![
            Some(osystem),
            arch.as_deref(),
            subarch.as_deref(),
            Some(release),
            host.as_deref(),
        ],
        vec![
            Some(osystem),
            arch.as_deref(),
            subarch.as_deref(),
            Some(release),
        ],
        vec![Some(osystem), arch.as_deref(), subarch.as_deref()],
        vec![Some(osystem), arch.as_deref()],
        vec![Some(osystem)],
        vec![],
    ];
    let mut names: Vec<String> = Vec::new();
    for parts in forms {
        // A form whose parts are not all known does not exist.
        let Some(parts) = parts
            .into_iter()
            .map(|p| p.filter(|s| !s.is_empty()))
            .collect::<Option<Vec<&str>>>()
        else {
            continue;
        };
        let name = std::iter::once(prefix)
            .filter(|p| !p.is_empty())
            .chain(parts)
            .collect::<Vec<_>>()
            .join("_");
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names.push(GENERIC.to_owned());
    Ok(names)
}

/// A template found by [`TemplateStore::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTemplate {
    /// The candidate name that matched.
    pub name: String,
    /// Where it came from: the file's path, or `builtin:NAME`.
    pub origin: String,
    /// Its text.
    pub source: String,
}

/// Where templates come from: an optional user directory over the
/// built-in set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateStore {
    user_dir: Option<PathBuf>,
}

impl TemplateStore {
    /// The built-in templates only.
    pub fn builtin() -> Self {
        TemplateStore { user_dir: None }
    }

    /// Files in `dir` override the built-in templates.
    pub fn with_user_dir(dir: impl Into<PathBuf>) -> Self {
        TemplateStore {
            user_dir: Some(dir.into()),
        }
    }

    /// The user directory, if any.
    pub fn user_dir(&self) -> Option<&Path> {
        self.user_dir.as_deref()
    }

    /// The built-in template of that exact name.
    pub fn builtin_source(name: &str) -> Option<&'static str> {
        BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// The first of `names` that exists, user directory first.
    pub fn find(&self, names: &[String]) -> Result<FoundTemplate, CurtinError> {
        if let Some(dir) = &self.user_dir {
            for name in names {
                let path = dir.join(name);
                match std::fs::read_to_string(&path) {
                    Ok(source) => {
                        return Ok(FoundTemplate {
                            name: name.clone(),
                            origin: path.display().to_string(),
                            source,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(CurtinError::Template {
                            file: path.display().to_string(),
                            line: None,
                            detail: format!("cannot read: {e}"),
                        });
                    }
                }
            }
        }
        for name in names {
            if let Some(source) = Self::builtin_source(name) {
                return Ok(FoundTemplate {
                    name: name.clone(),
                    origin: format!("builtin:{name}"),
                    source: source.to_owned(),
                });
            }
        }
        Err(CurtinError::TemplateNotFound {
            tried: names.to_vec(),
        })
    }

    /// Finds the template for `names` and renders it with `context`.
    pub fn render<S: Serialize>(
        &self,
        names: &[String],
        context: S,
    ) -> Result<(FoundTemplate, String), CurtinError> {
        let found = self.find(names)?;
        let out = render_source(&found.origin, &found.source, context)?;
        Ok((found, out))
    }
}

/// Renders one template text; errors name `origin` and the line.
pub fn render_source<S: Serialize>(
    origin: &str,
    source: &str,
    context: S,
) -> Result<String, CurtinError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let to_error = |e: minijinja::Error| CurtinError::Template {
        file: origin.to_owned(),
        line: e.line(),
        detail: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    env.add_template_owned(origin.to_owned(), source.to_owned())
        .map_err(to_error)?;
    let template = env.get_template(origin).map_err(to_error)?;
    template.render(context).map_err(to_error)
}

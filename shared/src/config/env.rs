//! Reading the environment: every problem is collected and reported at once,
//! each naming its variable, so that a deploy with three mistakes needs one
//! fix round, not three. Secrets are held in [`Secret`], whose `Debug` never
//! shows the value.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use crate::config::vars::{Rule, Var};
use crate::model::ident::Identifier;

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: &'static str,
    pub problem: String,
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, " {}: {};", p.variable, p.problem)?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn mentions(&self, variable: &str) -> bool {
        self.problems.iter().any(|p| p.variable == variable)
    }
}

/// A snapshot of the environment that collects problems while it is read,
/// and remembers which variables were read (the template contract test uses
/// that to catch a variable the template sets but no code reads).
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<ConfigProblem>,
    read: std::cell::RefCell<BTreeSet<&'static str>>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
            read: Default::default(),
        }
    }

    /// The variables read so far.
    pub fn variables_read(&self) -> Vec<&'static str> {
        self.read.borrow().iter().copied().collect()
    }

    pub fn problem(&mut self, var: &Var, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: var.name,
            problem: problem.into(),
        });
    }

    /// The trimmed value, or None when unset or blank.
    pub fn optional(&self, var: &Var) -> Option<String> {
        self.read.borrow_mut().insert(var.name);
        self.vars
            .get(var.name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&mut self, var: &Var) -> String {
        match self.optional(var) {
            Some(value) => value,
            None => {
                self.problem(var, "is required but not set (or blank)");
                String::new()
            }
        }
    }

    pub fn secret(&mut self, var: &Var) -> Option<Secret> {
        self.read.borrow_mut().insert(var.name);
        // Secrets are not trimmed: a password may end in a space.
        self.vars
            .get(var.name)
            .filter(|v| !v.is_empty())
            .map(|v| Secret::new(v.clone()))
    }

    /// A whole number within the variable's declared range, or its default.
    pub fn number<T>(&mut self, var: &Var) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display + TryFrom<i64>,
    {
        let Rule::Number { min, max, default } = var.rule else {
            unreachable!("{} is declared as a number", var.name);
        };
        let convert = |n: i64| {
            T::try_from(n)
                .unwrap_or_else(|_| unreachable!("{}'s declared range fits its type", var.name))
        };
        let (min, max, default) = (convert(min), convert(max), convert(default));
        let Some(raw) = self.optional(var) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(value) if value >= min && value <= max => value,
            Ok(_) => {
                self.problem(var, format!("must be between {min} and {max}, got {raw:?}"));
                default
            }
            Err(_) => {
                self.problem(var, format!("must be a whole number, got {raw:?}"));
                default
            }
        }
    }

    pub fn identifier(&mut self, var: &Var) -> Identifier {
        let Rule::Identifier { default } = var.rule else {
            unreachable!("{} is declared as an identifier", var.name);
        };
        let raw = self.optional(var).unwrap_or_else(|| default.to_string());
        match Identifier::parse(&raw) {
            Ok(ident) => ident,
            Err(e) => {
                self.problem(var, e.to_string());
                Identifier::parse(default).unwrap_or_else(|_| Identifier::fallback())
            }
        }
    }

    pub fn url(&mut self, var: &Var) -> Option<String> {
        let value = if var.rule == Rule::RequiredUrl {
            Some(self.required(var))
        } else {
            self.optional(var)
        }?;
        if value.is_empty() {
            return None;
        }
        if !(value.starts_with("http://") || value.starts_with("https://"))
            || !value
                .parse::<http::Uri>()
                .is_ok_and(|uri| uri.host().is_some_and(|host| !host.is_empty()))
        {
            self.problem(
                var,
                format!("must be an http:// or https:// URL, got {value:?}"),
            );
            return None;
        }
        Some(value)
    }

    pub fn finish<T>(&mut self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: std::mem::take(&mut self.problems),
            })
        }
    }
}

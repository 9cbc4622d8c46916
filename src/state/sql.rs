//! The backend-neutral layer every store operation is written on: statements with typed
//! parameters, rows with typed columns, and how durable a write must be. SQLite and
//! PostgreSQL each run a list of [`Statement`]s in one round trip to their connection and
//! answer with one [`Done`] per statement; the statements themselves (`schema`) are shared,
//! since SQLite takes PostgreSQL's `$N` placeholders and `ON CONFLICT` upserts. The one
//! dialect difference is the clock leases are decided by ([`Sql`]).

/// A parameter or a column's value: the four types the schema uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

/// A statement's text on each backend: the same for most; a statement that reads the clock
/// leases are decided by (`schema::clocked!`) differs only where it does, since on
/// PostgreSQL that is the server's clock, the one every replica shares, and on SQLite (one
/// file on one host) the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl From<&'static str> for Sql {
    fn from(text: &'static str) -> Self {
        Sql {
            sqlite: text,
            postgres: text,
        }
    }
}

/// One statement and its parameters (`$1`, `$2`, … in order).
pub struct Statement {
    pub sql: Sql,
    pub params: Vec<Value>,
    /// When it runs, after what the statement before it returned.
    pub runs_if: RunsIf,
}

/// Whether a statement runs, by what the one before it returned: one round trip either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsIf {
    Always,
    /// Only when the statement before returned no row (a claim's look at the row in its
    /// way, say): no second statement on the common path.
    PreviousEmpty,
    /// Only when the statement before returned a row (a mark that follows an insert that
    /// may find no room).
    PreviousFound,
}

/// `sql` with `params`.
pub fn statement<const N: usize>(sql: impl Into<Sql>, params: [Value; N]) -> Statement {
    Statement {
        sql: sql.into(),
        params: params.into(),
        runs_if: RunsIf::Always,
    }
}

impl Statement {
    /// This statement only when the one before it found nothing.
    pub fn unless_previous_found(mut self) -> Self {
        self.runs_if = RunsIf::PreviousEmpty;
        self
    }

    /// This statement only when the one before it returned a row.
    pub fn if_previous_found(mut self) -> Self {
        self.runs_if = RunsIf::PreviousFound;
        self
    }

    /// Whether to run, after what the statements before it did (a skipped one answers as
    /// having found nothing).
    pub fn runs_after(&self, done: &[Done]) -> bool {
        let found = done.last().is_some_and(|d| !d.rows.is_empty());
        match self.runs_if {
            RunsIf::Always => true,
            RunsIf::PreviousEmpty => !found,
            RunsIf::PreviousFound => found,
        }
    }
}

/// What one statement did: its rows (a query, or `RETURNING`) and how many rows it changed.
#[derive(Debug, Default)]
pub struct Done {
    pub rows: Vec<Row>,
    pub changed: u64,
}

impl Done {
    /// The first row, if any.
    pub fn first(&self) -> Option<&Row> {
        self.rows.first()
    }
}

/// One row's columns, in the statement's order.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

/// A column that is not what the statement promises: a bug or a foreign schema, never a panic.
#[derive(Debug)]
pub struct ColumnError(pub String);

impl Row {
    fn column(&self, index: usize) -> Result<&Value, ColumnError> {
        self.0
            .get(index)
            .ok_or_else(|| ColumnError(format!("no column {index}")))
    }

    pub fn int(&self, index: usize) -> Result<i64, ColumnError> {
        self.opt_int(index)?
            .ok_or_else(|| ColumnError(format!("column {index} is NULL")))
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, ColumnError> {
        match self.column(index)? {
            Value::Int(v) => Ok(Some(*v)),
            Value::Null => Ok(None),
            other => Err(ColumnError(format!(
                "column {index} is {other:?}, not a number"
            ))),
        }
    }

    pub fn blob(&self, index: usize) -> Result<Vec<u8>, ColumnError> {
        match self.column(index)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(ColumnError(format!("column {index} is not bytes"))),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, ColumnError> {
        self.opt_text(index)?
            .ok_or_else(|| ColumnError(format!("column {index} is NULL")))
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, ColumnError> {
        match self.column(index)? {
            Value::Text(v) => Ok(Some(v.clone())),
            Value::Null => Ok(None),
            Value::Int(_) | Value::Blob(_) => {
                Err(ColumnError(format!("column {index} is not text")))
            }
        }
    }
}

/// How a write must survive a crash of the database server (SQLite ignores it: its commits
/// are all alike, see `sqlite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Waited for on disk: claims, thread claims and cards, snoozes, the schema.
    Durable,
    /// May be lost in a server crash, harmlessly (see `postgres`'s note): done marks,
    /// releases, DM channels, what a card shows, pruning, and reads.
    Relaxed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_typed_and_a_wrong_type_is_an_error_not_a_panic() {
        let row = Row(vec![
            Value::Int(7),
            Value::Text("t".into()),
            Value::Null,
            Value::Blob(vec![1]),
        ]);
        assert_eq!(row.int(0).ok(), Some(7));
        assert_eq!(row.text(1).ok().as_deref(), Some("t"));
        assert_eq!(row.opt_text(2).ok(), Some(None));
        assert_eq!(row.opt_int(2).ok(), Some(None));
        assert!(row.int(1).is_err());
        assert!(row.text(0).is_err());
        assert!(row.text(2).is_err());
        assert!(row.text(3).is_err());
        assert!(row.int(9).is_err());
    }

    #[test]
    fn a_statement_unless_the_previous_found_runs_only_after_an_empty_one() {
        let look = statement("SELECT 1", []).unless_previous_found();
        let found = Done {
            rows: vec![Row(vec![Value::Int(1)])],
            changed: 1,
        };
        assert!(look.runs_after(&[]));
        assert!(look.runs_after(&[Done::default()]));
        assert!(!look.runs_after(&[found]));
        assert!(statement("SELECT 1", []).runs_after(&[Done {
            rows: vec![Row(vec![])],
            changed: 1
        }]));
    }

    #[test]
    fn a_statement_if_the_previous_found_runs_only_after_a_row() {
        let mark = statement("SELECT 1", []).if_previous_found();
        let found = Done {
            rows: vec![Row(vec![Value::Int(1)])],
            changed: 1,
        };
        assert!(!mark.runs_after(&[]));
        assert!(!mark.runs_after(&[Done::default()]));
        assert!(mark.runs_after(&[found]));
    }
}

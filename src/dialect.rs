//! What differs between MariaDB and MySQL starts from [`Flavor`], read once
//! per connection from the server's own words (`@@version`,
//! `@@version_comment`), never guessed from a version number: a MySQL 10
//! must not be taken for MariaDB, nor a MariaDB 9 fork for MySQL.

/// The server family a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// From `@@version` and `@@version_comment`: MariaDB names itself in
    /// one of them (`10.11.6-MariaDB-0+deb12u1`, `mariadb.org binary
    /// distribution`); anything else speaks MySQL's dialect.
    pub fn from_version(version: &str, comment: &str) -> Flavor {
        let says = |s: &str| s.to_ascii_lowercase().contains("mariadb");
        if says(version) || says(comment) {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// Asks the server (one round trip; do it once per connection).
    pub async fn detect(conn: &mut mysql_async::Conn) -> Result<Flavor, mysql_async::Error> {
        use mysql_async::prelude::Queryable;
        let row: Option<(String, String)> = conn
            .query_first("SELECT @@version, @@version_comment")
            .await?;
        let (version, comment) = row.unwrap_or_default();
        Ok(Flavor::from_version(&version, &comment))
    }
}

#[cfg(test)]
mod tests {
    use super::Flavor;

    #[test]
    fn flavor_comes_from_the_servers_words_not_the_version_number() {
        let cases = [
            ("10.11.6-MariaDB-0+deb12u1", "Debian 12", Flavor::MariaDb),
            (
                "11.8.2-MariaDB",
                "mariadb.org binary distribution",
                Flavor::MariaDb,
            ),
            ("9.7.4", "(Debian)", Flavor::MySql),
            ("8.4.5", "MySQL Community Server - GPL", Flavor::MySql),
            // A future MySQL 10 is still MySQL; a MariaDB build whose
            // version string was shortened is still MariaDB.
            ("10.0.1", "MySQL Community Server - GPL", Flavor::MySql),
            ("5.5.5-10.11.6", "MariaDB Server", Flavor::MariaDb),
        ];
        for (version, comment, want) in cases {
            assert_eq!(
                Flavor::from_version(version, comment),
                want,
                "{version} / {comment}"
            );
        }
    }
}

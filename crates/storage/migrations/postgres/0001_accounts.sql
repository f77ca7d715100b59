CREATE TABLE accounts (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (host, username)
);

-- SCRAM keys only (RFC 5802 §3): never the password.
CREATE TABLE scram_credentials (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    hash TEXT NOT NULL,
    salt BYTEA NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (host, username, hash),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username) ON DELETE CASCADE
);

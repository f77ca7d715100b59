-- RFC 6121 rosters: one row per contact; groups as a JSON array of strings.
CREATE TABLE roster_items (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL,
    ask INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    groups TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (host, username, contact)
);
CREATE INDEX roster_items_contact ON roster_items (contact);

-- XEP-0237 roster versions: a counter per account, bumped on every change.
CREATE TABLE roster_versions (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (host, username)
);

-- RFC 6121 §3.1.3: inbound subscription requests awaiting the user's answer.
CREATE TABLE subscription_requests (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    stanza TEXT NOT NULL,
    PRIMARY KEY (host, username, contact)
);

-- XEP-0160 offline messages, in arrival order.
CREATE TABLE offline_messages (
    id BIGSERIAL PRIMARY KEY,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE INDEX offline_messages_owner ON offline_messages (host, username, id);

-- Small per-account documents: private XML, vCard, block list, last activity.
CREATE TABLE account_data (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (host, username, store, key)
);

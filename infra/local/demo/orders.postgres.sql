-- The demo's second table's target. The product never creates a target
-- table: the team that owns it does, with its own constraints.
CREATE TABLE IF NOT EXISTS orders (
    region     text,
    order_no   bigint,
    amount     numeric(38, 9) CHECK (amount >= 0),
    rate       double precision,
    note       varchar(12),
    paid       boolean,
    shipped_on date,
    placed_at  timestamp,
    payload    jsonb,
    signature  bytea,
    qty        smallint,
    PRIMARY KEY (region, order_no)
);
GRANT SELECT, INSERT, UPDATE ON orders TO countries_app;

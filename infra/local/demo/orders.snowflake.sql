-- The demo's second table, in the Snowflake emulator: eleven columns of the
-- mapped types with a composite key (REGION, ORDER_NO), some rows bad on
-- purpose. (No NULL timestamp: the emulator sends one in a form Arrow
-- readers refuse; real Snowflake does not.)
CREATE TABLE IF NOT EXISTS ORDERS (
    REGION     VARCHAR,
    ORDER_NO   NUMBER(18,0),
    AMOUNT     NUMBER(38,9),
    RATE       FLOAT,
    NOTE       VARCHAR,
    PAID       BOOLEAN,
    SHIPPED_ON DATE,
    PLACED_AT  TIMESTAMP_NTZ,
    PAYLOAD    VARIANT,
    SIGNATURE  BINARY,
    QTY        NUMBER(4,0)
);
INSERT INTO ORDERS
SELECT 'eu', 1, 10.5, 1.25, 'first', TRUE, '2026-12-01'::DATE, '2026-12-01 09:00:00.123456789'::TIMESTAMP_NTZ, PARSE_JSON('{"items":[1,2]}'), TO_BINARY('00FF', 'HEX'), 2
UNION ALL SELECT 'eu', 2, 123456789012345678901234567.123456789, 'NaN'::FLOAT, NULL, NULL, NULL, '2026-12-01 10:00:00'::TIMESTAMP_NTZ, NULL, NULL, NULL
UNION ALL SELECT 'eu', 3, -5, 1, 'refund?', FALSE, '2026-12-02'::DATE, '2026-12-02 11:00:00'::TIMESTAMP_NTZ, PARSE_JSON('[]'), NULL, 1
UNION ALL SELECT 'us', 1, 7, 2.5, 'a note far too long for its column', TRUE, '2026-12-02'::DATE, '2026-12-02 12:00:00'::TIMESTAMP_NTZ, PARSE_JSON('{"a":null}'), TO_BINARY('CAFE', 'HEX'), 3
UNION ALL SELECT NULL, 9, 1, 1, 'no region', TRUE, '2026-12-02'::DATE, '2026-12-02 13:00:00'::TIMESTAMP_NTZ, NULL, NULL, 1
UNION ALL SELECT 'us', 2, 8, 3.5, 'v1', TRUE, '2026-12-03'::DATE, '2026-12-03 08:00:00'::TIMESTAMP_NTZ, NULL, NULL, 4
UNION ALL SELECT 'us', 2, 9, 3.5, 'v2', TRUE, '2026-12-03'::DATE, '2026-12-03 09:00:00'::TIMESTAMP_NTZ, NULL, NULL, 4;

-- Stream mode's message groups are blocks of consecutive ids (version 2 of
-- the changes message): a group is its bucket of its packing, the bucket
-- count and the ids per block. Marks and reports written before this file
-- were packed by id (block 1). Re-runnable, like every file here.
ALTER TABLE change_marks ADD COLUMN IF NOT EXISTS block integer NOT NULL DEFAULT 1;
ALTER TABLE failure_report ADD COLUMN IF NOT EXISTS change_block integer;

DO $$
BEGIN
    -- The key grows to the whole group: (buckets, block, bucket).
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.conrelid = 'change_marks'::regclass AND c.contype = 'p' AND a.attname = 'block'
    ) THEN
        ALTER TABLE change_marks DROP CONSTRAINT IF EXISTS change_marks_pkey;
        ALTER TABLE change_marks ADD PRIMARY KEY (buckets, block, bucket);
    END IF;
END
$$;

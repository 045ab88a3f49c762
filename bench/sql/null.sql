-- The null procedure: a PL/pgSQL function that does nothing, PostgreSQL's floor under
-- every stored-procedure call (the counterpart of tabos's `null`).
CREATE FUNCTION null_proc() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
END $$;

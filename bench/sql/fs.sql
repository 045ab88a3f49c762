-- The localized filesystem of paper §4.4 in PL/pgSQL: figure 9's Directory and
-- Localized_file tables with fully qualified names, create_file and delete_file. As in
-- tabos, a directory entry is keyed by (d_name, content): its parent's full path and
-- its own name, so a create is one lookup of the parent and one insert (no directory
-- traversal), and a directory's entries are one index range.

CREATE TABLE directory (
    d_name text NOT NULL,
    content text NOT NULL,
    -- 0: directory, 1: localized file.
    content_type smallint NOT NULL CHECK (content_type IN (0, 1)),
    user_name text NOT NULL,
    protection_info integer NOT NULL CHECK (protection_info BETWEEN 0 AND 511),
    f_size bigint NOT NULL DEFAULT 0,
    p_key integer NOT NULL DEFAULT 0,
    PRIMARY KEY (d_name, content)
);

CREATE TABLE localized_file (
    f_name text NOT NULL,
    block_no bigint NOT NULL,
    f_owner text NOT NULL,
    bytes bytea NOT NULL,
    p_key integer NOT NULL DEFAULT 0,
    PRIMARY KEY (f_name, block_no)
);

-- The key of path in directory: (its parent's path, its name). '/a' -> ('/', 'a').
CREATE FUNCTION fs_split(path text, OUT dir text, OUT name text)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    last_slash integer := length(path) - strpos(reverse(path), '/') + 1;
BEGIN
    IF left(path, 1) <> '/' OR last_slash = length(path) THEN
        RAISE EXCEPTION 'not an absolute path to an entry: %', path
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    dir := CASE WHEN last_slash = 1 THEN '/' ELSE left(path, last_slash - 1) END;
    name := substr(path, last_slash + 1);
END $$;

-- Fail unless caller may change the entries of directory dir: it exists, is a
-- directory, and grants w to its owner (if caller) or to others. Top-level entries
-- (home directories) are made by user administration, not by files' owners.
CREATE FUNCTION fs_check_writable_dir(dir text, caller text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key record := fs_split(dir);
    parent directory;
BEGIN
    SELECT * INTO parent FROM directory WHERE d_name = key.dir AND content = key.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no directory %', dir USING ERRCODE = 'undefined_file';
    END IF;
    IF parent.content_type <> 0 THEN
        RAISE EXCEPTION '% is not a directory', dir USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT ((parent.user_name = caller AND parent.protection_info & 128 <> 0)
            OR parent.protection_info & 2 <> 0) THEN
        RAISE EXCEPTION '% may not write %', caller, dir USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- create_file(path, owner, mode): a new empty localized file, one insert after the
-- parent check. Raises unique_violation if path exists.
CREATE FUNCTION create_file(path text, owner text, mode integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key record := fs_split(path);
BEGIN
    IF key.dir = '/' THEN
        RAISE EXCEPTION 'create_file(%): top-level entries are home directories', path
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM fs_check_writable_dir(key.dir, owner);
    INSERT INTO directory (d_name, content, content_type, user_name, protection_info)
    VALUES (key.dir, key.name, 1, owner, mode);
END $$;

-- delete_file(path, caller): remove a file and its blocks, or an empty directory.
-- Returns the removed entry's size in bytes; raises undefined_file if there is none.
CREATE FUNCTION delete_file(path text, caller text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    key record := fs_split(path);
    gone directory;
BEGIN
    IF key.dir = '/' THEN
        RAISE EXCEPTION 'delete_file(%): top-level entries are home directories', path
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM fs_check_writable_dir(key.dir, caller);
    DELETE FROM directory WHERE d_name = key.dir AND content = key.name
    RETURNING * INTO gone;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delete_file(%): no such entry', path USING ERRCODE = 'undefined_file';
    END IF;
    IF gone.content_type = 0 THEN
        IF EXISTS (SELECT 1 FROM directory WHERE d_name = path) THEN
            RAISE EXCEPTION 'delete_file(%): directory not empty', path
                USING ERRCODE = 'dependent_objects_still_exist';
        END IF;
    ELSE
        DELETE FROM localized_file WHERE f_name = path;
    END IF;
    RETURN gone.f_size;
END $$;

-- The scheduler of paper §4.2 in PL/pgSQL: the Worker and Task tables and figure 2's
-- simple FIFO policy, plus complete_task, which frees the worker's capacity again.
-- PostgreSQL has no partitions: p_key is an ordinary column that the client draws at
-- random (the paper's P), as the tabos client picks a partition.

CREATE TABLE worker (
    p_key integer NOT NULL,
    worker_id bigint NOT NULL,
    capacity integer NOT NULL CHECK (capacity > 0),
    unused_capacity integer NOT NULL CHECK (unused_capacity BETWEEN 0 AND capacity),
    PRIMARY KEY (p_key, worker_id)
);

CREATE TABLE task (
    task_id bigint PRIMARY KEY,
    p_key integer NOT NULL,
    -- Null while queued (figure 3's deferred placement); FIFO always assigns.
    worker_id bigint,
    submitted_ns bigint NOT NULL
);

-- Figure 2, schedule_simple(P, TID): a worker of partition p with unused capacity
-- takes task tid. Returns the worker, or null when p has no capacity left (the
-- client then tries another partition). SKIP LOCKED lets concurrent schedulers pass
-- a worker another transaction is updating instead of queueing behind its row lock.
CREATE FUNCTION schedule_fifo(p integer, tid bigint, now_ns bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    wid bigint;
BEGIN
    SELECT worker_id INTO wid FROM worker
     WHERE unused_capacity > 0 AND p_key = p
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF wid IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE worker SET unused_capacity = unused_capacity - 1
     WHERE worker_id = wid AND p_key = p;
    INSERT INTO task (task_id, p_key, worker_id, submitted_ns) VALUES (tid, p, wid, now_ns);
    RETURN wid;
END $$;

-- complete_task(TID): delete the task and give its worker the capacity back.
-- Returns the worker; raises no_data_found for an unknown task.
CREATE FUNCTION complete_task(tid bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    done task;
BEGIN
    DELETE FROM task WHERE task_id = tid RETURNING * INTO done;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'complete_task(%): no such task', tid USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE worker SET unused_capacity = unused_capacity + 1
     WHERE p_key = done.p_key AND worker_id = done.worker_id;
    RETURN done.worker_id;
END $$;

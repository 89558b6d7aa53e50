-- The reservation function's statements keep the plan each connection makes
-- for them, instead of planning every line again. The group-commit writer's
-- connection plans every statement per call (`plan_cache_mode =
-- force_custom_plan`, for its order update, whose kept plan was once a scan
-- of every order), and the function's statements inherited that: a plan per
-- line, about a fifth of the writer's server time at saturation. Their
-- kept plans look stock up by key even when made while `inventory` and
-- `reservations` were empty (each has one index, its key, and the
-- statements give all of its leading columns; tests/storage_plans.rs).
ALTER FUNCTION oms_reserve_lines(TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[])
    SET plan_cache_mode = auto;

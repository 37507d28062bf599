-- Every mutation appends one audit row. Through this function the INSERT is parsed and planned
-- once per session (PL/pgSQL keeps the plan) instead of on every call.
CREATE FUNCTION audit_append(
    p_id uuid, p_at timestamptz, p_actor text, p_actor_role text, p_action text,
    p_entity_type text, p_entity_id text, p_outcome text, p_details jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO audit_log (id, at, actor, actor_role, action, entity_type, entity_id, outcome, details)
    VALUES (p_id, p_at, p_actor, p_actor_role, p_action, p_entity_type, p_entity_id, p_outcome, p_details);
END $$;

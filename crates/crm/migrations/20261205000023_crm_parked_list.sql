-- `till crm status` lists the parked changes themselves: which record, since when, why.
CREATE FUNCTION crm.parked(rows_max integer)
    RETURNS TABLE (sobject text, external_field text, external_id text, last_error text, created_at timestamptz)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT c.sobject, c.external_field, c.external_id, c.last_error, c.created_at
          FROM crm.changes c WHERE c.status = 'parked' ORDER BY c.id LIMIT rows_max
    $$;
REVOKE ALL ON FUNCTION crm.parked(integer) FROM PUBLIC;

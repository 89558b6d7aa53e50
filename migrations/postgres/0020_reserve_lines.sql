-- A group-commit batch's stock reservations in one round trip instead of
-- one per line: the lines in the batch's order, each held as the per-line
-- statement in the store's inventory code holds it (the warehouse with the
-- most available, checked again on the row it updates; nothing when the
-- order holds stock already), answering each line's warehouse, NULL where
-- it could not be held (the writer then writes the batch member by member).
CREATE FUNCTION oms_reserve_lines(
    p_tenants TEXT[], p_orders TEXT[], p_skus TEXT[], p_quantities BIGINT[], p_at BIGINT[]
) RETURNS TABLE (line INTEGER, warehouse TEXT) LANGUAGE plpgsql AS $$
DECLARE
    held TEXT;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(p_skus, 1), 0) LOOP
        held := NULL;
        UPDATE inventory SET reserved = reserved + p_quantities[i], updated_at = p_at[i]
         WHERE tenant_id = p_tenants[i] AND sku = p_skus[i] AND on_hand - reserved >= p_quantities[i]
           AND warehouse_id = (
             SELECT w.warehouse_id FROM inventory w
             WHERE w.tenant_id = p_tenants[i] AND w.sku = p_skus[i]
               AND w.on_hand - w.reserved >= p_quantities[i]
             ORDER BY w.on_hand - w.reserved DESC, w.warehouse_id LIMIT 1)
           AND NOT EXISTS (
             SELECT 1 FROM reservations r
             WHERE r.tenant_id = p_tenants[i] AND r.order_id = p_orders[i])
         RETURNING inventory.warehouse_id INTO held;
        line := i;
        warehouse := held;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Each customer's charges in the billing database beside what the payment service meant to charge
-- (intended.csv, written by payment_service.py in the current directory). Run from that directory:
--   psql "$DB" -f compare.sql
\set ON_ERROR_STOP on
CREATE TEMP TABLE intended (customer TEXT PRIMARY KEY, charges BIGINT, amount NUMERIC);
\copy intended FROM 'intended.csv' WITH (FORMAT csv, HEADER)
SELECT customer,
       i.charges AS intended_charges,
       coalesce(c.charges, 0) AS charged,
       i.amount AS intended_amount,
       coalesce(c.amount, 0) AS charged_amount,
       CASE WHEN i.charges = c.charges AND i.amount = c.amount THEN 'ok' ELSE 'MISMATCH' END AS "check"
FROM intended i
FULL JOIN (SELECT customer, count(*) AS charges, sum(amount) AS amount FROM charges GROUP BY customer) c
    USING (customer)
ORDER BY customer;

"""The help desk API's shapes (customers); the parts keep theirs beside their routes."""

from __future__ import annotations

from ninja import Schema

from helpdesk.customers import Hit


class CustomerHit(Schema):
    customer_id: str
    company_name: str
    email: str
    domain: str
    agents_count: int
    status: str
    plan: str
    matched: str
    matched_text: str
    score: float


class SearchResults(Schema):
    customers: list[CustomerHit]


def search_out(hits: list[Hit]) -> dict:
    return {
        "customers": [
            {
                "customer_id": hit.customer.key,
                "company_name": hit.customer.company_name,
                "email": hit.customer.email,
                "domain": hit.customer.domain,
                "agents_count": hit.agents_count,
                "status": hit.customer.status,
                "plan": hit.customer.plan,
                "matched": hit.matched,
                "matched_text": hit.matched_text,
                "score": round(hit.score, 3),
            }
            for hit in hits
        ]
    }

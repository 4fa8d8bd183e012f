import httpx

from tests.support.meshkit import two_agents


async def test_get_through_two_sidecars(tmp_path):
    async with two_agents(tmp_path) as mesh:
        async with httpx.AsyncClient() as client:
            r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["service"] == "orders"
        assert body["caller"].endswith("URI=spiffe://mesh.test/svc/frontend")

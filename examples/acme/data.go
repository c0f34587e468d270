package acme

// The built-in data set: five customers (people and addresses are made up),
// their support tickets and a handful of documentation pages.

func builtinCustomers() []Customer {
	return []Customer{
		{CustomerID: "CUST-001", Name: "Ada Lovelace", Email: "ada@example.com", Plan: "enterprise",
			Address: Address{Street: "12 St James's Square", City: "London", PostalCode: "SW1Y 4JH", Country: "GB"}},
		{CustomerID: "CUST-002", Name: "Grace Hopper", Email: "grace@example.org", Plan: "team",
			Address: Address{Street: "1 Navy Yard Way", City: "Arlington", PostalCode: "22202", Country: "US"}},
		{CustomerID: "CUST-003", Name: "Katherine Johnson", Email: "kjohnson@example.net", Plan: "enterprise",
			Address: Address{Street: "21 Langley Blvd", City: "Hampton", PostalCode: "23681", Country: "US"}},
		{CustomerID: "CUST-004", Name: "Alan Turing", Email: "alan@example.co.uk", Plan: "free",
			Address: Address{Street: "7 Bletchley Park Lane", City: "Milton Keynes", PostalCode: "MK3 6EB", Country: "GB"}},
		{CustomerID: "CUST-005", Name: "Hedy Lamarr", Email: "hedy@example.at", Plan: "team",
			Address: Address{Street: "Währinger Straße 9", City: "Wien", PostalCode: "1090", Country: "AT"}},
	}
}

type customerTicket struct {
	customer string
	Ticket
}

func builtinTickets() []customerTicket {
	return []customerTicket{
		{"CUST-001", Ticket{TicketID: "TCK-101", Subject: "Invoice shows the wrong VAT number", Status: "open", Priority: "normal", OpenedAt: "2026-10-02T10:00:00Z"}},
		{"CUST-001", Ticket{TicketID: "TCK-102", Subject: "Cannot add a fifth seat to the workspace", Status: "closed", Priority: "low", OpenedAt: "2026-10-05T16:20:00Z"}},
		{"CUST-001", Ticket{TicketID: "TCK-107", Subject: "API returns 502 during nightly export", Status: "open", Priority: "urgent", OpenedAt: "2026-11-20T02:13:00Z"}},
		{"CUST-002", Ticket{TicketID: "TCK-103", Subject: "Refund for duplicate order ORD-1002", Status: "open", Priority: "normal", OpenedAt: "2026-10-13T09:45:00Z"}},
		{"CUST-003", Ticket{TicketID: "TCK-104", Subject: "SSO login loops back to the sign-in page", Status: "closed", Priority: "urgent", OpenedAt: "2026-10-18T11:30:00Z"}},
		{"CUST-005", Ticket{TicketID: "TCK-105", Subject: "Change billing address", Status: "open", Priority: "low", OpenedAt: "2026-11-01T08:00:00Z"}},
	}
}

func builtinDocs() []Doc {
	return []Doc{
		{Title: "Refund policy", URL: "https://docs.acme.example/billing/refunds",
			Body: "Orders can be refunded in full or in part within 30 days. Refunds over 500 USD need a finance manager's approval. A refund goes back to the original payment method within 5 business days."},
		{Title: "Placing orders", URL: "https://docs.acme.example/procurement/orders",
			Body: "Use place_order with the catalogue item, a quantity and the unit price. Orders over 1000 USD in total are reviewed by procurement before they ship."},
		{Title: "Provisioning servers", URL: "https://docs.acme.example/infra/provisioning",
			Body: "Servers come in small, medium and large sizes, in the development, staging and production environments. Production servers need an SRE's sign-off; at most 20 servers per request."},
		{Title: "Customer data handling", URL: "https://docs.acme.example/privacy/customer-data",
			Body: "Customer records are personal data under GDPR. Read them only to resolve a ticket, never export them, and log every access."},
		{Title: "Support ticket priorities", URL: "https://docs.acme.example/support/priorities",
			Body: "Urgent tickets are answered within one hour, normal tickets within one business day and low-priority tickets within three business days."},
		{Title: "Plans and pricing", URL: "https://docs.acme.example/billing/plans",
			Body: "The free plan has three seats, the team plan twenty and the enterprise plan unlimited seats with SSO and an uptime SLA."},
	}
}

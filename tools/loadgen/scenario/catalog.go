package scenario

// The catalogue gives generated conversations their content: a few bot
// domains, each with intents that start a flow of steps, visitor phrasings
// and bot answers. It is built once per Generator and only read afterwards.

type flowDef struct {
	intent  string   // NLU intent that starts the flow
	id      string   // flow id
	name    string   // flow name
	steps   []string // step ids, in order
	goal    string   // goal reached on completion ("" = none)
	value   int64    // goal value in micros of USD (0 = none)
	asks    []string // visitor phrasings of the intent
	answers []string // bot answers, one per step
	slot    string   // variable the flow extracts ("" = none)
	values  []string // example values of slot
}

type domain struct {
	name  string
	queue string // agent queue for handoffs
	flows []flowDef
}

type phrase struct{ text, intent string }

type agent struct{ id, name string }

type model struct {
	name                string
	inMicros, outMicros int64 // cost per 1000 tokens, in micros of USD
}

type catalog struct {
	domains        []domain
	followUps      []phrase // visitor phrases without a new intent
	gibberish      []string // visitor messages the bot does not understand
	fallbacks      []string
	greetings      []string
	agentLines     []string
	visitorToAgent []string
	agents         []agent
	pages          []string
	referrers      []string
	userAgents     []string
	locales        []string
	models         []model
	handoffReasons []string
}

func newCatalog() *catalog {
	return &catalog{
		domains: []domain{
			{name: "support", queue: "support", flows: []flowDef{
				{intent: "order_status", id: "track-order", name: "Track an order", steps: []string{"ask_order_number", "lookup_order", "show_status"},
					asks:    []string{"Where is my order?", "My parcel hasn't arrived yet", "Can you check the status of my order?", "I ordered something last week and nothing came"},
					answers: []string{"Sure, what is your order number?", "Thanks, let me look that up.", "Your order is on its way and should arrive tomorrow."},
					slot:    "order_number", values: []string{"A-10442", "A-20987", "B-33012", "C-48211", "A-99310"}},
				{intent: "refund", id: "refund", name: "Refund request", steps: []string{"ask_reason", "ask_order_number", "confirm_refund"}, goal: "refund_started",
					asks:    []string{"I want my money back", "How do I get a refund?", "The item was broken, I'd like a refund"},
					answers: []string{"I'm sorry to hear that. What went wrong?", "Which order is it about?", "Done - the refund will reach your account in 3-5 days."},
					slot:    "refund_reason", values: []string{"damaged", "late", "wrong item", "changed my mind"}},
				{intent: "reset_password", id: "password-reset", name: "Password reset", steps: []string{"verify_email", "send_link"}, goal: "password_reset",
					asks:    []string{"I forgot my password", "I can't log in", "How do I reset my password?"},
					answers: []string{"No problem. What email address do you use to log in?", "I've sent you a reset link. It is valid for 30 minutes."},
					slot:    "email", values: []string{"sam@example.com", "j.doe@example.org", "kim@example.net"}},
			}},
			{name: "sales", queue: "sales", flows: []flowDef{
				{intent: "pricing", id: "pricing", name: "Pricing", steps: []string{"ask_team_size", "show_plan"},
					asks:    []string{"How much does it cost?", "What are your prices?", "Do you have a plan for small teams?"},
					answers: []string{"Happy to help! How many people are on your team?", "For a team your size the Pro plan fits best: 49 USD per month."},
					slot:    "team_size", values: []string{"3", "12", "40", "250"}},
				{intent: "book_demo", id: "demo-booking", name: "Book a demo", steps: []string{"ask_email", "pick_slot", "confirm_demo"}, goal: "demo_booked", value: 150_000_000,
					asks:    []string{"Can I get a demo?", "I'd like to see the product in action", "Can someone show me how it works?"},
					answers: []string{"Great! What's your work email?", "Which time suits you: Tuesday 10:00 or Thursday 15:00?", "You're booked. See you then!"},
					slot:    "company", values: []string{"Acme Corp", "Globex", "Initech", "Umbrella"}},
			}},
			{name: "booking", queue: "reservations", flows: []flowDef{
				{intent: "book_table", id: "table-booking", name: "Book a table", steps: []string{"ask_date", "ask_party_size", "confirm_booking"}, goal: "booking_made", value: 20_000_000,
					asks:    []string{"I need a table for tonight", "Can I book a table for two?", "Do you have room for 6 people on Friday?"},
					answers: []string{"Which day would you like to come?", "How many guests?", "Your table is reserved. We look forward to seeing you!"},
					slot:    "party_size", values: []string{"2", "4", "6", "8"}},
				{intent: "cancel_booking", id: "cancel-booking", name: "Cancel a booking", steps: []string{"find_booking", "confirm_cancel"},
					asks:    []string{"I need to cancel my reservation", "Please cancel my booking for tomorrow"},
					answers: []string{"What name is the booking under?", "Your booking is cancelled."},
					slot:    "booking_name", values: []string{"Miller", "Garcia", "Nguyen", "Okafor"}},
			}},
			{name: "faq", queue: "general", flows: []flowDef{
				{intent: "opening_hours", id: "faq-hours", name: "Opening hours", steps: []string{"answer"},
					asks:    []string{"When are you open?", "What are your opening hours?", "Are you open on Sundays?"},
					answers: []string{"We're open Monday to Saturday, 9:00 to 18:00."}},
				{intent: "shipping_info", id: "faq-shipping", name: "Shipping", steps: []string{"ask_country", "answer"},
					asks:    []string{"Do you ship abroad?", "How long does delivery take?", "What does shipping cost?"},
					answers: []string{"Where should we deliver to?", "Delivery takes 2-4 working days and is free over 50 USD."},
					slot:    "country", values: []string{"DE", "FR", "US", "GB", "NL"}},
			}},
		},
		followUps: []phrase{
			{"Yes, that's right", "affirm"}, {"No, that's not it", "deny"}, {"Ok thanks", "thank_you"},
			{"Can you repeat that?", "repeat"}, {"Hmm, let me check", "stall"}, {"That works for me", "affirm"},
			{"Actually, one more question", "more_questions"},
		},
		gibberish: []string{
			"asdf qwerty", "is the thing the thing?", "blorp", "do you like pizza", "?!", "what about the other one from before",
			"my cat walked on the keyboard", "ok but why",
		},
		fallbacks: []string{
			"Sorry, I didn't get that. Could you rephrase?",
			"I'm not sure I understand. Can you say it differently?",
			"Hmm, I don't know that one yet.",
		},
		greetings: []string{"Hi! How can I help you today?", "Hello 👋 What can I do for you?", "Welcome! Ask me anything."},
		agentLines: []string{
			"Let me check that for you.",
			"I can see the problem on our side. I'm fixing it now.",
			"Is there anything else I can help with?",
			"Thanks for your patience!",
			"I've updated your account. You should see it in a minute.",
		},
		visitorToAgent: []string{"Finally a human!", "Thanks", "Ok, I'll wait", "Great, it works now", "No, that's all", "Could you also check my invoice?"},
		agents: []agent{
			{"agent-ana", "Ana"}, {"agent-ben", "Ben"}, {"agent-chloe", "Chloé"}, {"agent-dev", "Dev"}, {"agent-eli", "Eli"}, {"agent-fatma", "Fatma"},
		},
		pages: []string{
			"https://shop.example.com/", "https://shop.example.com/pricing", "https://shop.example.com/help/orders",
			"https://shop.example.com/contact", "https://shop.example.com/products/42", "https://shop.example.com/checkout",
		},
		referrers: []string{"", "", "https://www.google.com/", "https://news.example.org/review", "https://twitter.com/"},
		userAgents: []string{
			"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
			"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
			"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
			"Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
		},
		locales:        []string{"en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "nl-NL"},
		models:         []model{{"gpt-4o-mini", 150, 600}, {"claude-haiku-4", 800, 4000}, {"llama-3.1-70b", 590, 790}},
		handoffReasons: []string{"visitor asked for a human", "bot could not answer", "complaint", "billing question"},
	}
}
